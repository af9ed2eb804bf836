"""HASH RANG XSHA1 XSHA256 XSHA512 XMD5 XCRC MFMT MFF AVBL, OPTS HASH and SITE CHMOD: transfer integrity and fidelity.

- Digests (HASH with the session's algorithm, the X commands with theirs) are computed by the storage in a worker
  thread as it streams the file, never on the event loop. Each is bounded by ``hash_max_size`` (the range hashed;
  larger: 556 for HASH, as the draft asks for policy refusals, 550 for the X commands, as ProFTPD answers), by one
  digest at a time per session (commands are taken in order, so a second HASH waits for the first), and by a
  quarter of the I/O threads server-wide, so file I/O of other sessions always has threads left. ``hash_enabled =
  false`` turns them off (502) and out of FEAT.
- MFMT, MFF and SITE CHMOD change a file or directory inside the user's home (paths go through the storage's
  containment), need write permission, and never touch the home itself.
- AVBL tells the free bytes of a directory's file system; read-only users may ask.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftpkit.protocol.errors import CommandError
from ftpkit.protocol.hashes import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    X_COMMANDS,
    format_hash_feature,
    format_hash_reply,
    normalize_algorithm,
)
from ftpkit.protocol.listing import Facts
from ftpkit.protocol.modify import (
    MFF_FACTS,
    format_mff_feature,
    format_mff_reply,
    format_mfmt_reply,
    format_mode,
    parse_mff,
    parse_mfmt,
    parse_mode,
    parse_time_val,
)
from ftpkit.server.commands.table import command
from ftpkit.server.storage import StorageError

if TYPE_CHECKING:
    from ftpkit.protocol.commands import Command
    from ftpkit.server.session import Session

log = logging.getLogger("ftpkit.server")


@dataclass
class HashState:
    """A session's choices for digests: the algorithm (OPTS HASH) and the byte range (RANG; END inclusive)."""

    algorithm: str = DEFAULT_ALGORITHM
    range: tuple[int, int] | None = None


def features(s: Session) -> list[tuple[str, str]]:
    """FEAT lines for this session (the selected algorithm carries the ``*``)."""
    out = [("AVBL", ""), ("MFF", format_mff_feature()), ("MFMT", "")]
    if s.cfg.hash_enabled:
        out.append(("HASH", format_hash_feature(s.hashing.algorithm)))
        out += [(verb, "filename;start;end") for verb in X_COMMANDS]  # as ProFTPD lists them (WinSCP reads it)
    return out


async def _hashing_on(s: Session) -> bool:
    if not s.cfg.hash_enabled:
        await s.reply(502, "File digests are turned off on this server (hash_enabled).")
    return s.cfg.hash_enabled


def _slots(s: Session) -> asyncio.Semaphore:
    if s.shared.digest_slots is None:
        s.shared.digest_slots = asyncio.Semaphore(max(1, s.cfg.io_threads // 4))
    return s.shared.digest_slots


async def _stat(s: Session, name: str) -> tuple[str, str, Facts]:
    """The virtual path, the name to show and the facts of what ``name`` names. A name in double quotes (WinSCP
    quotes names with spaces) is read without them unless the quoted name itself exists."""
    assert s.storage is not None
    vpath = s.vpath(name)
    try:
        return vpath, name, await s.storage.stat(vpath)
    except StorageError:
        if not (len(name) > 2 and name.startswith('"') and name.endswith('"')):
            raise
    vpath = s.vpath(name[1:-1])
    return vpath, name[1:-1], await s.storage.stat(vpath)


async def _digest(s: Session, vpath: str, algorithm: str, start: int, end: int) -> str:
    assert s.storage is not None
    started = time.monotonic()
    async with _slots(s):
        digest = await s.storage.digest(vpath, algorithm, start, end)
    log.info("[%s] %s of %s, bytes %d-%d (%d), in %.3f s", s.id, algorithm, vpath, start, end, end - start,
             time.monotonic() - started)
    return digest


def _too_big(s: Session, name: str, length: int, hint: str) -> str:
    return (f"{name}: {length} bytes is more than this server digests at once (hash_max_size {s.cfg.hash_max_size}"
            f" bytes); {hint}.")


# --- HASH and its algorithm and range ------------------------------------------------------------------------------

async def opts_hash(s: Session, value: str) -> None:
    """``OPTS HASH [algorithm]``: show or choose the session's algorithm (called from OPTS)."""
    if not await _hashing_on(s):
        return
    if not value.strip():
        await s.reply(200, s.hashing.algorithm)
        return
    name = normalize_algorithm(value)
    if name is None:
        await s.reply(501, f"Unknown algorithm {value.strip()[:20]}, current selection not changed; accepted: "
                           f"{', '.join(ALGORITHMS)}.")
        return
    s.hashing.algorithm = name
    await s.reply(200, name)


@command("RANG", arg="required", syntax="RANG start end (bytes for the next HASH, end inclusive; RANG 1 0 resets)")
async def rang(s: Session, cmd: Command) -> None:
    """draft-bryan-ftp-range, for HASH only: RETR and STOR here do not take it, so FEAT does not list RANG."""
    if not await _hashing_on(s):
        return
    match = re.fullmatch(r"(\d{1,19}) (\d{1,19})", (cmd.arg or "").strip())
    if not match:
        s.hashing.range = None
        await s.reply(501, "RANG needs two byte positions: RANG start end (end inclusive; RANG 1 0 resets).")
        return
    first, last = int(match.group(1)), int(match.group(2))
    if (first, last) == (1, 0):
        s.hashing.range = None
        await s.reply(350, "Range reset: HASH digests whole files.")
    elif first > last:
        s.hashing.range = None
        await s.reply(501, f"RANG {first} {last}: the start is after the end; the range is reset (whole files).")
    else:
        s.hashing.range = (first, last)
        await s.reply(350, f"Range {first}-{last} set for HASH (RANG 1 0 resets).")


@command("HASH", arg="required", syntax="HASH path (OPTS HASH chooses the algorithm, RANG a byte range)")
async def hash_(s: Session, cmd: Command) -> None:
    if not await _hashing_on(s):
        return
    try:
        vpath, name, facts = await _stat(s, cmd.arg or "")
    except StorageError as exc:
        await s.reply(550, f"{exc.reason}.")
        return
    if not facts.is_file:
        await s.reply(553 if facts.is_dir else 550, f"{name}: HASH works on plain files only.")
        return
    start, end = 0, facts.size  # end exclusive
    if s.hashing.range is not None:
        first, last = s.hashing.range
        if first >= facts.size:
            await s.reply(501, f"RANG {first}-{last} starts after the end of {name} ({facts.size} bytes); RANG 1 0 "
                               "resets the range.")
            return
        start, end = first, min(last + 1, facts.size)
    if end - start > s.cfg.hash_max_size:
        await s.reply(556, _too_big(s, name, end - start, "RANG selects a part"))
        return
    algorithm = s.hashing.algorithm
    try:
        digest = await _digest(s, vpath, algorithm, start, end)
    except StorageError as exc:
        await s.reply(550, f"{exc.reason}.")
        return
    await s.reply(213, format_hash_reply(algorithm, start, max(end - 1, start), digest, name))


# --- the algorithm-specific commands -------------------------------------------------------------------------------

async def _x_digest(s: Session, cmd: Command, algorithm: str) -> None:
    """``XSHA1 path [start end]``: start and end in bytes, end exclusive (as ProFTPD reads them); ``250 <HEX>``."""
    if not await _hashing_on(s):
        return
    arg = cmd.arg or ""
    name, span = arg, None
    match = re.fullmatch(r'"([^"]+)"(?: (\d{1,19}) (\d{1,19}))?', arg)
    if match:
        name = match.group(1)
        span = (int(match.group(2)), int(match.group(3))) if match.group(2) else None
    else:
        match = re.fullmatch(r"(.+?) (\d{1,19}) (\d{1,19})", arg)
        if match:
            try:
                await _stat(s, arg)  # a name that ends in two numbers is still a name
            except StorageError:
                name, span = match.group(1), (int(match.group(2)), int(match.group(3)))
    try:
        vpath, name, facts = await _stat(s, name)
    except StorageError as exc:
        await s.reply(550, f"{exc.reason}.")
        return
    if not facts.is_file:
        await s.reply(550, f"{name}: {cmd.verb} works on plain files only.")
        return
    start, end = span if span is not None else (0, facts.size)
    if span is not None and not start < end <= facts.size:
        await s.reply(501, f"{cmd.verb}: bytes {start}-{end} are not within {name} ({facts.size} bytes): give "
                           f"{cmd.verb} path START END with START < END <= the size.")
        return
    if end - start > s.cfg.hash_max_size:
        await s.reply(550, _too_big(s, name, end - start, f"{cmd.verb} path START END digests a part"))
        return
    try:
        digest = await _digest(s, vpath, algorithm, start, end)
    except StorageError as exc:
        await s.reply(550, f"{exc.reason}.")
        return
    await s.reply(250, digest.upper())  # upper case, as ProFTPD and Serv-U answer the X commands


@command("XSHA512", arg="required", syntax="XSHA512 path [start end] (SHA-512; end exclusive)")
async def xsha512(s: Session, cmd: Command) -> None:
    await _x_digest(s, cmd, X_COMMANDS["XSHA512"])


@command("XSHA256", arg="required", syntax="XSHA256 path [start end] (SHA-256; end exclusive)")
async def xsha256(s: Session, cmd: Command) -> None:
    await _x_digest(s, cmd, X_COMMANDS["XSHA256"])


@command("XSHA1", arg="required", syntax="XSHA1 path [start end] (SHA-1; end exclusive)")
async def xsha1(s: Session, cmd: Command) -> None:
    await _x_digest(s, cmd, X_COMMANDS["XSHA1"])


@command("XMD5", arg="required", syntax="XMD5 path [start end] (MD5; end exclusive)")
async def xmd5(s: Session, cmd: Command) -> None:
    await _x_digest(s, cmd, X_COMMANDS["XMD5"])


@command("XCRC", arg="required", syntax="XCRC path [start end] (CRC32; end exclusive)")
async def xcrc(s: Session, cmd: Command) -> None:
    await _x_digest(s, cmd, X_COMMANDS["XCRC"])


# --- times, modes, free space --------------------------------------------------------------------------------------

async def _changeable(s: Session, name: str) -> str | None:
    """The virtual path of an existing file or directory that may be changed, or ``None`` (replied)."""
    assert s.storage is not None
    vpath = s.vpath(name)
    if vpath == "/":
        await s.reply(550, f"{name}: the home directory itself is not changed.")
        return None
    try:
        await s.storage.stat(vpath)
    except StorageError as exc:
        await s.reply(550, f"{exc.reason}.")
        return None
    return vpath


@command("MFMT", arg="required", write=True, syntax="MFMT YYYYMMDDHHMMSS[.sss] path (UTC)")
async def mfmt(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    try:
        text, mtime, name = parse_mfmt(cmd.arg)
    except CommandError as exc:
        await s.reply(501, f"{exc}.")
        return
    vpath = await _changeable(s, name)
    if vpath is None:
        return
    try:
        await s.storage.set_times(vpath, mtime)
    except StorageError as exc:
        await s.reply(exc.code if exc.code == 501 else 550, f"{exc.reason}.")
        return
    await s.reply(213, format_mfmt_reply(text, name))


@command("MFF", arg="required", write=True, syntax="MFF modify=YYYYMMDDHHMMSS;UNIX.mode=0644; path")
async def mff(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    try:
        facts, name = parse_mff(cmd.arg)
        mtime = mode = None
        for fact, value in facts:
            if fact.lower() == "modify":
                mtime = (value, parse_time_val(value))
            elif fact.lower() == "unix.mode":
                mode = parse_mode(value)
            else:
                await s.reply(504, f"MFF: the fact {fact[:30]} cannot be changed here; MFF changes "
                                   f"{' and '.join(MFF_FACTS)}. Nothing was changed.")
                return
    except CommandError as exc:
        await s.reply(501, f"{exc}.")
        return
    vpath = await _changeable(s, name)
    if vpath is None:
        return
    applied: list[tuple[str, str]] = []
    try:
        if mode is not None and await s.storage.chmod(vpath, mode):
            applied.append(("UNIX.mode", format_mode(mode)))
        if mtime is not None:
            await s.storage.set_times(vpath, mtime[1])
            applied.insert(0, ("modify", mtime[0]))
    except StorageError as exc:
        await s.reply(exc.code if exc.code == 501 else 550, f"{exc.reason}.")
        return
    if not applied:
        await s.reply(504, f"{name}: this storage keeps no UNIX.mode; nothing was changed.")
        return
    await s.reply(213, format_mff_reply(applied, name))


async def site_chmod(s: Session, rest: str) -> None:
    """``SITE CHMOD 644 path`` (called from SITE)."""
    assert s.storage is not None
    if not (s.account and s.account.write):
        await s.reply(550, "Permission denied: this account is read-only.")
        return
    mode_text, _, name = rest.strip().partition(" ")
    if not name:
        await s.reply(501, "SITE CHMOD needs a mode and a path: SITE CHMOD 644 path.")
        return
    try:
        mode = parse_mode(mode_text)
    except CommandError as exc:
        await s.reply(501, f"SITE CHMOD: {exc}.")
        return
    vpath = await _changeable(s, name)
    if vpath is None:
        return
    try:
        changed = await s.storage.chmod(vpath, mode)
    except StorageError as exc:
        await s.reply(exc.code if exc.code == 501 else 550, f"SITE CHMOD failed: {exc.reason}.")
        return
    if not changed:
        await s.reply(200, f"SITE CHMOD {name}: this storage keeps no modes; nothing was changed.")
        return
    await s.reply(200, f"SITE CHMOD {format_mode(mode)} {name}: done.")


@command("AVBL", syntax="AVBL [directory]")
async def avbl(s: Session, cmd: Command) -> None:
    """draft-peterson-streamlined-ftp-command-extensions-10: bytes free for uploads in a directory."""
    assert s.storage is not None
    vpath = s.vpath(cmd.arg)
    try:
        free = await s.storage.free_space(vpath)
    except StorageError as exc:
        await s.reply(550, f"AVBL: {exc.reason}.")
        return
    if free is None:
        await s.reply(502, "AVBL: this storage cannot tell its free space.")
        return
    await s.reply(213, str(free))
