"""Parsing directory listings a client receives: MLSD/MLST facts (RFC 3659) and LIST output in the Unix
``ls -l`` and DOS/IIS formats. Pure functions on text; the year of a Unix date without one is inferred from
``now`` as ``ls`` does (within six months before now).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from ftpkit.protocol.listing import parse_facts, parse_mlst_time

_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                        "dec"), 1)}


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry as a client sees it. ``type`` is file, dir, link or other."""

    name: str
    type: str
    size: int | None = None
    mtime: float | None = None  # seconds since the epoch, UTC
    target: str | None = None  # of a symlink, when the listing shows it
    perm: str | None = None
    raw: str = ""
    precision: float = 1.0  # seconds: MLSD times are exact; LIST shows minutes, or only the day for old files

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        return self.type == "file"


def parse_mlsx_line(line: str) -> Entry | None:
    """One MLSD line (or an MLST line without its leading space); ``None`` for cdir/pdir entries."""
    try:
        facts, name = parse_facts(line.lstrip(" ") if line.startswith(" ") else line)
    except ValueError:
        return None
    kind = facts.get("type", "").lower()
    if kind in ("cdir", "pdir") or name in (".", ".."):
        return None
    if kind == "dir":
        etype = "dir"
    elif kind == "file":
        etype = "file"
    elif kind.startswith("os.unix=slink") or kind.startswith("os.unix=symlink"):
        etype = "link"
    else:
        etype = "other"
    size = facts.get("size") or facts.get("sizd")
    mtime = None
    if "modify" in facts:
        try:
            mtime = parse_mlst_time(facts["modify"])
        except ValueError:
            mtime = None
    return Entry(name, etype, int(size) if size and size.isdigit() else None, mtime, perm=facts.get("perm"), raw=line)


_UNIX = re.compile(
    r"^(?P<mode>[-dlbcpsDw?][-rwxsStTlL+.@]{9}[.+@]?)\s+"
    r"(?:(?P<links>\d+)\s+)?"
    r"(?P<owner>\S+)\s+(?:(?P<group>\S+)\s+)?"
    r"(?P<size>\d+|\d+,\s*\d+)\s+"
    r"(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?P<timeyear>\d{1,2}:\d{2}|\d{4})\s"
    r"(?P<name>.*)$"
)
_DOS = re.compile(
    r"^(?P<month>\d{2})-(?P<day>\d{2})-(?P<year>\d{2}|\d{4})\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp][Mm])?"
    r"\s+(?:(?P<dir><DIR>)|(?P<size>\d+))\s+(?P<name>.+)$"
)


def _unix_time(month: str, day: str, timeyear: str, now: float) -> float | None:
    mon = _MONTHS.get(month.lower())
    if mon is None:
        return None
    if ":" in timeyear:
        hour, minute = (int(x) for x in timeyear.split(":"))
        year = time.gmtime(now).tm_year
        try:
            stamp = calendar.timegm((year, mon, int(day), hour, minute, 0))
        except ValueError:
            return None
        if stamp > now + 86400:  # in the future: it was last year
            stamp = calendar.timegm((year - 1, mon, int(day), hour, minute, 0))
        return float(stamp)
    try:
        return float(calendar.timegm((int(timeyear), mon, int(day), 0, 0, 0)))
    except ValueError:
        return None


def parse_list_line(line: str, now: float) -> Entry | None:
    """One LIST line in Unix or DOS/IIS form; ``None`` for ``total N`` and lines it does not understand."""
    line = line.rstrip("\r\n")
    if not line or line.lower().startswith("total "):
        return None
    match = _UNIX.match(line)
    if match:
        mode = match["mode"]
        name = match["name"]
        target = None
        kind = {"d": "dir", "-": "file", "l": "link"}.get(mode[0], "other")
        if kind == "link" and " -> " in name:
            name, target = name.split(" -> ", 1)
        size_text = match["size"]
        size = int(size_text) if size_text.isdigit() else None
        if name in (".", ".."):
            return None
        precision = 60.0 if ":" in match["timeyear"] else 86400.0
        return Entry(name, kind, size, _unix_time(match["month"], match["day"], match["timeyear"], now),
                     target=target, raw=line, precision=precision)
    match = _DOS.match(line)
    if match:
        year = int(match["year"])
        if year < 100:
            year += 2000 if year < 70 else 1900
        hour = int(match["hour"]) % 12 if match["ampm"] else int(match["hour"])
        if match["ampm"] and match["ampm"].lower() == "pm":
            hour += 12
        try:
            mtime = float(calendar.timegm((year, int(match["month"]), int(match["day"]), hour, int(match["minute"]),
                                           0)))
        except ValueError:
            mtime = None
        if match["dir"]:
            return Entry(match["name"], "dir", None, mtime, raw=line, precision=60.0)
        return Entry(match["name"], "file", int(match["size"]), mtime, raw=line, precision=60.0)
    return None


def plain_name(name: str) -> bool:
    """Whether ``name`` can be an entry of a directory: one path component, not empty, ``.`` or ``..``, without
    ``/`` or NUL."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def parse_listing(text: str, now: float, mlsd: bool = False) -> list[Entry]:
    """The entries of a directory listing. Entries whose name is not a :func:`plain_name` (``../x`` or ``/etc/x``
    from a hostile server, an empty name) are dropped, so no caller is led outside the folder it lists into."""
    parse = parse_mlsx_line if mlsd else (lambda line: parse_list_line(line, now))
    out = []
    for line in text.splitlines():
        entry = parse(line)
        if entry is not None and plain_name(entry.name):
            out.append(entry)
    return out
