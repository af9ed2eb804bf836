"""Directory listings: ``ls -l`` lines for LIST, names for NLST, and RFC 3659 facts for MLSD/MLST.

Pure formatting and parsing from :class:`Facts`; gathering the facts (stat calls) is the server's job.
"""

from __future__ import annotations

import stat as statmod
import time
from dataclasses import dataclass

SIX_MONTHS = 182 * 24 * 3600
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MLST_FACTS = ("type", "size", "modify", "perm", "unique")
"""The facts the server offers, in FEAT order; all are selected by default."""


@dataclass(frozen=True, slots=True)
class Facts:
    name: str
    mode: int  # st_mode: file type and permission bits
    size: int
    mtime: float  # seconds since the epoch, UTC
    nlink: int = 1
    unique: str = ""  # device and inode, as hex
    owner: str = "ftp"
    group: str = "ftp"

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return statmod.S_ISLNK(self.mode)

    @property
    def is_file(self) -> bool:
        return statmod.S_ISREG(self.mode)


def ls_time(mtime: float, now: float) -> str:
    """``Nov 21 05:28`` within six months of now, else ``Nov 21  2025`` (as ls and vsftpd print it)."""
    t = time.gmtime(mtime)
    day = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d}"
    if abs(now - mtime) < SIX_MONTHS:
        return f"{day} {t.tm_hour:02d}:{t.tm_min:02d}"
    return f"{day}  {t.tm_year}"


def format_ls_line(facts: Facts, now: float, link_target: str | None = None) -> str:
    """One ``ls -l`` line as lftp, ncftp and FileZilla parse it."""
    mode = statmod.filemode(facts.mode)
    name = facts.name if link_target is None else f"{facts.name} -> {link_target}"
    return (
        f"{mode} {facts.nlink:4d} {facts.owner:<8} {facts.group:<8} {facts.size:12d} "
        f"{ls_time(facts.mtime, now)} {name}"
    )


def mlst_time(mtime: float) -> str:
    """``YYYYMMDDHHMMSS`` in UTC (RFC 3659 time-val), also the MDTM reply."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))


def parse_mlst_time(text: str) -> float:
    """Parse a time-val (with optional fraction) back to seconds since the epoch."""
    import calendar

    main, _, frac = text.partition(".")
    if len(main) != 14 or not main.isdigit():
        raise ValueError(f"{text!r} is not YYYYMMDDHHMMSS")
    t = time.strptime(main, "%Y%m%d%H%M%S")
    return calendar.timegm(t) + (float("0." + frac) if frac.isdigit() else 0.0)


def mlst_type(facts: Facts) -> str:
    if facts.is_dir:
        return "dir"
    if facts.is_file:
        return "file"
    if facts.is_link:
        return "OS.unix=symlink"
    return "OS.unix=special"


def format_facts(facts: Facts, perm: str, enabled: tuple[str, ...] = MLST_FACTS) -> str:
    """``type=file;size=3;modify=20261121052800;perm=rlwd;unique=803U1a2b; name`` (RFC 3659 §7)."""
    values = {
        "type": mlst_type(facts),
        "size": str(facts.size),
        "modify": mlst_time(facts.mtime),
        "perm": perm,
        "unique": facts.unique,
    }
    parts = [f"{fact}={values[fact]};" for fact in enabled if values.get(fact)]
    return "".join(parts) + " " + facts.name


def parse_mlst_opts(value: str, offered: tuple[str, ...] = MLST_FACTS) -> tuple[str, ...]:
    """The facts an ``OPTS MLST`` argument selects (``type;size;``), in ``offered`` order.

    RFC 3659 §7.9: fact names are case-insensitive, unknown ones are ignored, and no argument selects none.
    """
    asked = {name.strip().lower() for name in value.split(";")}
    return tuple(fact for fact in offered if fact in asked)


def format_mlst_opts_reply(selected: tuple[str, ...]) -> str:
    """The 200 reply's text to ``OPTS MLST``: ``MLST OPTS type;size;`` (the facts now selected; none: ``MLST OPTS``)."""
    return "MLST OPTS" + (" " + "".join(f"{fact};" for fact in selected) if selected else "")


def format_mlst_feature(selected: tuple[str, ...], offered: tuple[str, ...] = MLST_FACTS) -> str:
    """FEAT's line for MLST: every offered fact, ``*`` after those selected: ``MLST type*;size*;modify;``."""
    return "MLST " + "".join(f"{fact}{'*' if fact in selected else ''};" for fact in offered)


def parse_facts(line: str) -> tuple[dict[str, str], str]:
    """Parse an MLSD/MLST line into (facts with lower-case names, path name)."""
    head, sep, name = line.partition(" ")
    if not sep:
        raise ValueError(f"MLSx line {line[:60]!r} has no space before the name")
    facts: dict[str, str] = {}
    for item in head.split(";"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"MLSx fact {item[:30]!r} has no '='")
        facts[key.lower()] = value
    return facts, name
