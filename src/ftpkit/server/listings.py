"""Listings for LIST, NLST, MLSD, MLST and STAT: gathering facts through storage, formatting through the
protocol core's :mod:`ftpkit.protocol.listing`. Lines are produced as the storage yields entries and sent in chunks
(:func:`send_lines`): a directory with 100,000 objects lists with flat memory.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ftpkit.protocol.listing import Facts, format_facts, format_ls_line
from ftpkit.server.splice import SpliceStream
from ftpkit.server.storage import MAX_PATTERN, StorageError

if TYPE_CHECKING:
    from ftpkit.server.data import AnyDataStream, Transfer
    from ftpkit.server.session import Session

GLOB_CHARS = frozenset("*?[")
LISTING_CHUNK = 64 << 10


def split_list_arg(arg: str | None) -> str | None:
    """Drop ``ls`` options that clients send (``LIST -la dir`` -> ``dir``)."""
    if not arg:
        return None
    words = arg.split(" ")
    while words and words[0].startswith("-") and len(words[0]) > 1:
        words.pop(0)
    rest = " ".join(words)
    return rest or None


def perm_of(facts: Facts, write: bool) -> str:
    """The RFC 3659 ``perm`` fact for this user."""
    if facts.is_dir:
        return "elcmpdf" if write else "el"
    return "rawdf" if write else "r"


async def _resolve(s: Session, arg: str | None) -> tuple[str, str | None, Facts | None]:
    """(directory, glob pattern or None, facts when the argument names a single file)."""
    assert s.storage is not None
    path = s.vpath(arg)
    if arg and GLOB_CHARS & set(posixpath.basename(path)):
        pattern = posixpath.basename(path)  # only the last component: "*/*/*" is a folder named "*/*" (not there)
        if len(pattern) > MAX_PATTERN:
            raise StorageError(f"a glob pattern is at most {MAX_PATTERN} characters, not {len(pattern)}", 501)
        return posixpath.dirname(path), pattern, None
    facts = await s.storage.stat(path)
    if facts.is_dir:
        return path, None, None
    return posixpath.dirname(path), None, facts


async def _one(line: str) -> AsyncIterator[str]:
    yield line


async def list_lines(s: Session, arg: str | None) -> AsyncIterator[str]:
    """The ``ls -l`` lines of LIST (and STAT path): the argument is resolved now (a StorageError here is a 550
    before any data connection), the entries are read as the lines are sent."""
    assert s.storage is not None
    directory, pattern, single = await _resolve(s, arg)
    now = time.time()
    if single is not None:
        return _one(format_ls_line(single, now))
    return (format_ls_line(f, now) async for f in s.storage.listdir(directory, pattern))


async def nlst_lines(s: Session, arg: str | None) -> AsyncIterator[str]:
    assert s.storage is not None
    directory, pattern, single = await _resolve(s, arg)
    if single is not None:
        return _one(arg or single.name)
    entries = s.storage.listdir(directory, pattern)
    if pattern is not None and arg and "/" in arg:
        prefix = posixpath.dirname(arg)
        return (posixpath.join(prefix, f.name) async for f in entries)  # as ls prints "dir/*.txt"
    return (f.name async for f in entries)


async def mlsd_lines(s: Session, arg: str | None) -> AsyncIterator[str]:
    assert s.storage is not None and s.account is not None
    path = s.vpath(arg)
    facts = await s.storage.stat(path)
    if not facts.is_dir:
        raise StorageError(f"{path}: not a directory (MLSD lists directories; use MLST for a file)", 501)
    write, wanted = s.account.write, s.mlst_facts
    return (format_facts(f, perm_of(f, write), wanted) async for f in s.storage.listdir(path))


async def send_lines(lines: AsyncIterator[str], stream: AnyDataStream, t: Transfer, idle: float) -> None:
    """Write listing lines to the data connection in chunks of about :data:`LISTING_CHUNK` bytes, so a directory
    of any size is sent with flat memory."""
    assert not isinstance(stream, SpliceStream)  # a listing's data connection never splices
    chunk: list[bytes] = []
    size = 0
    async for line in lines:
        data = (line + "\r\n").encode("utf-8", "surrogateescape")
        chunk.append(data)
        size += len(data)
        if size >= LISTING_CHUNK:
            await stream.write(b"".join(chunk), idle)
            t.bytes += size
            chunk, size = [], 0
    if chunk:
        await stream.write(b"".join(chunk), idle)
        t.bytes += size


async def mlst_line(s: Session, arg: str | None) -> str:
    assert s.storage is not None and s.account is not None
    path = s.vpath(arg)
    facts = await s.storage.stat(path)
    named = Facts(path, facts.mode, facts.size, facts.mtime, facts.nlink, facts.unique)
    return format_facts(named, perm_of(facts, s.account.write), s.mlst_facts)
