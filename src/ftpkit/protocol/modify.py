"""Changing a file's facts over the control connection, and asking for free space.

- MFMT (draft-somers-ftp-mfxx-04): ``MFMT 20240102030405 path`` sets the modification time, in UTC as an RFC 3659
  time-val (a fraction is allowed: ``20240102030405.123``); the reply is ``213 Modify=20240102030405; path``.
- MFF (the same draft): ``MFF modify=20240102030405;UNIX.mode=0644; path`` sets several facts at once (names are
  case-insensitive); the reply lists the facts set, in the same form.
- SITE CHMOD: ``SITE CHMOD 644 path``. Modes are octal permission bits, 000-777: setuid, setgid and sticky bits are
  refused (over FTP they would let a user make a set-uid program of an upload).
- AVBL (draft-peterson-streamlined-ftp-command-extensions-10): ``AVBL [dir]`` -> ``213 <bytes available>``.

Parsing errors are :class:`CommandError` (what a client sent) or :class:`ReplyError` (what a server sent), each one
line naming what is accepted.
"""

from __future__ import annotations

import calendar
import re
import time

from ftpkit.protocol.errors import CommandError, ReplyError
from ftpkit.protocol.replies import Reply

_TIME_VAL = re.compile(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d{1,9}))?")
TIME_SYNTAX = "YYYYMMDDHHMMSS[.sss] (UTC)"
MFF_FACTS = ("modify", "UNIX.mode")
"""The facts MFF changes, as FEAT lists them."""
MODE_SYNTAX = "an octal mode 000-777 (permission bits; setuid, setgid and sticky are not accepted)"


def parse_time_val(text: str) -> float:
    """An RFC 3659 time-val (``20240102030405`` or with a fraction) as seconds since the epoch."""
    match = _TIME_VAL.fullmatch(text.strip())
    if not match:
        raise CommandError(f"{text.strip()[:40]!r} is not a time {TIME_SYNTAX}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    if not (year >= 1 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour <= 23 and minute <= 59 and second <= 60):
        raise CommandError(f"{text.strip()[:40]!r} is not a valid date and time {TIME_SYNTAX}")
    fraction = match.group(7)
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def format_time_val(mtime: float, digits: int = 0) -> str:
    """Seconds since the epoch as a time-val in UTC, with ``digits`` fraction digits (0: whole seconds)."""
    whole = int(mtime // 1)
    text = time.strftime("%Y%m%d%H%M%S", time.gmtime(whole))
    if digits:
        fraction = min(round((mtime - whole) * 10 ** digits), 10 ** digits - 1)
        text += f".{fraction:0{digits}d}"
    return text


def _split_path(arg: str | None, verb: str, first: str) -> tuple[str, str]:
    head, sep, path = (arg or "").partition(" ")
    if not head or not sep or not path:
        raise CommandError(f"{verb} needs {first} and a path: {verb} {first} path")
    return head, path


def parse_mfmt(arg: str | None) -> tuple[str, float, str]:
    """``MFMT``'s argument: (the time as given, the time in seconds, the path)."""
    text, path = _split_path(arg, "MFMT", TIME_SYNTAX.split(" ")[0])
    return text, parse_time_val(text), path


def format_mfmt_reply(time_text: str, path: str) -> str:
    """The 213 reply's text: ``Modify=20240102030405; path``."""
    return f"Modify={time_text}; {path}"


def parse_mfmt_reply(reply: Reply) -> float | None:
    """The time an MFMT reply says it set (``213 Modify=...; path``; pyftpdlib ends the path with a dot), or
    ``None`` for a 213 that does not say (pure-ftpd: ``213 UTIME OK``). :class:`ReplyError` for any other reply."""
    if reply.code != 213:
        raise ReplyError(f"MFMT failed: {reply.code} {reply.lines[-1][:80]}")
    match = re.search(r"modify=([0-9.]+)", reply.lines[-1], re.IGNORECASE)
    if not match:
        return None
    try:
        return parse_time_val(match.group(1).rstrip("."))
    except CommandError as exc:
        raise ReplyError(f"MFMT reply: {exc}") from None


def parse_mff(arg: str | None) -> tuple[list[tuple[str, str]], str]:
    """``MFF``'s argument: the facts as (name, value) pairs in the order given, and the path."""
    head, path = _split_path(arg, "MFF", "fact=value;")
    facts: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in head.split(";"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise CommandError(f"MFF fact {item[:40]!r} is not name=value")
        if name.lower() in seen:
            raise CommandError(f"MFF fact {name[:40]!r} is given twice")
        seen.add(name.lower())
        facts.append((name, value))
    if not facts:
        raise CommandError("MFF needs at least one fact: MFF modify=YYYYMMDDHHMMSS; path")
    return facts, path


def format_mff_reply(facts: list[tuple[str, str]], path: str) -> str:
    """The 213 reply's text: the facts set, ``modify=...;UNIX.mode=0644; path``."""
    return "".join(f"{name}={value};" for name, value in facts) + " " + path


def format_mff_feature(facts: tuple[str, ...] = MFF_FACTS) -> str:
    """FEAT's parameters for MFF: ``modify;UNIX.mode;``."""
    return "".join(f"{fact};" for fact in facts)


def parse_mode(text: str) -> int:
    """A SITE CHMOD / UNIX.mode value: octal, one to three digits (four with a leading 0), at most 777."""
    text = text.strip()
    if not re.fullmatch(r"[0-7]{1,3}|0[0-7]{3}", text):
        raise CommandError(f"{text[:20]!r} is not {MODE_SYNTAX}")
    return int(text, 8)


def format_mode(mode: int) -> str:
    """``0o644`` -> ``0644``."""
    return f"{mode:04o}"


def parse_avbl_reply(reply: Reply) -> int:
    """The bytes an AVBL reply says are available (``213 1234567``)."""
    text = reply.lines[-1].strip().split(" ")[0]
    if reply.code != 213 or not text.isdigit():
        raise ReplyError(f"AVBL reply is not 213 and a number of bytes: {reply.code} {reply.lines[-1][:80]}")
    return int(text)
