"""Mirroring a directory tree in either direction, transferring only what changed (size or time), optionally
deleting what the source lacks, with N sessions in parallel.

Times are kept both ways, so a second run transfers nothing: a download gets the remote file's time (MLSD, or MDTM
when the listing shows only minutes or days), an upload is given the local file's time with MFMT where the server
offers it (and is then compared by time exactly; without MFMT a remote file counts as unchanged when it is newer).
With a :class:`~ftpkit.client.verify.Verifier` every file is checked after its transfer and transferred once more
when it differs; a file's time is set only once it checked out, so a bad copy is never taken for a good one later.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ftpkit.client.core import FTPClient
from ftpkit.client.errors import FTPError, ReplyError, VerifyError
from ftpkit.client.verify import Verifier, local_file
from ftpkit.protocol.listparse import Entry

TIME_SLACK = 2.0  # seconds: listings round times (Unix LIST to the minute is handled by comparing sizes too)

SessionFactory = Callable[[], Awaitable[FTPClient]]
Job = Callable[[FTPClient], Awaitable[int]]
"""One file to transfer, run on one of the parallel sessions; returns the bytes moved."""


@dataclass
class MirrorResult:
    transferred: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0

    def summary(self) -> str:
        text = (f"{len(self.transferred)} transferred ({self.bytes} bytes), {len(self.unchanged)} unchanged, "
                f"{len(self.deleted)} deleted")
        return text + (f", {len(self.failed)} failed" if self.failed else "")


async def remote_tree(ftp: FTPClient, top: str) -> tuple[dict[str, Entry], set[str]]:
    """All files (relative path -> entry) and directories (relative paths) below ``top``."""
    files: dict[str, Entry] = {}
    dirs: set[str] = set()
    pending = [""]
    for _ in range(100000):  # bounded walk
        if not pending:
            break
        rel = pending.pop()
        for entry in await ftp.listdir(posixpath.join(top, rel) if rel else top):
            path = posixpath.join(rel, entry.name) if rel else entry.name
            if entry.is_dir:
                dirs.add(path)
                pending.append(path)
            elif entry.is_file or entry.type == "link":
                files[path] = entry
    return files, dirs


def local_tree(top: Path) -> tuple[dict[str, os.stat_result], set[str]]:
    files: dict[str, os.stat_result] = {}
    dirs: set[str] = set()
    for base, dirnames, filenames in os.walk(top):
        rel_base = os.path.relpath(base, top)
        rel_base = "" if rel_base == "." else rel_base.replace(os.sep, "/")
        for d in dirnames:
            dirs.add(posixpath.join(rel_base, d) if rel_base else d)
        for f in filenames:
            rel = posixpath.join(rel_base, f) if rel_base else f
            files[rel] = os.stat(os.path.join(base, f))
    return files, dirs


def _same(entry: Entry, other_size: int, other_mtime: float, newer_only: bool) -> bool:
    """Whether a remote entry and a local file are the same by size and time (within the listing's precision)."""
    if entry.size is not None and entry.size != other_size:
        return False
    if entry.mtime is None:
        return entry.size is not None
    slack = max(TIME_SLACK, entry.precision)
    if newer_only:  # uploads: the server's time is the upload time unless it can be set
        return other_mtime <= entry.mtime + slack
    return abs(entry.mtime - other_mtime) <= slack


async def _run_jobs(jobs: list[tuple[str, Job]], factory: SessionFactory, parallel: int, result: MirrorResult) -> None:
    queue: asyncio.Queue[tuple[str, Job]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        ftp = await factory()
        try:
            while not queue.empty():
                name, job = queue.get_nowait()
                try:
                    result.bytes += await job(ftp)
                    result.transferred.append(name)
                except FTPError as exc:
                    result.failed.append((name, str(exc)))
        finally:
            await ftp.quit()

    workers = max(1, min(parallel, len(jobs)))
    if jobs:
        await asyncio.gather(*(worker() for _ in range(workers)))


async def _verified(session: FTPClient, verifier: Verifier | None, name: str, transfer: Callable[[], Awaitable[int]],
                    remote: str, local: Path) -> int:
    """Run a transfer; with a verifier, check it and run it once more when the copy differs."""
    count = await transfer()
    if verifier is None:
        return count
    try:
        await verifier.check(session, remote, str(local), local.stat().st_size, local_file(local))
    except VerifyError as exc:
        session.options.transcript("!!!", f"{exc.summary()}; transferring {name} once more")
        count += await transfer()
        await verifier.check(session, remote, str(local), local.stat().st_size, local_file(local))
    return count


async def _exact_mtime(session: FTPClient, entry: Entry, remote: str) -> float | None:
    """The remote file's time: the listing's when exact (MLSD), else MDTM's when offered (LIST shows minutes)."""
    if entry.precision > 1 and "MDTM" in await session.features():
        try:
            return await session.mdtm(remote)
        except ReplyError:
            pass
    return entry.mtime


async def mirror_down(ftp: FTPClient, factory: SessionFactory, remote: str, local: Path, delete: bool = False,
                      parallel: int = 1, verifier: Verifier | None = None) -> MirrorResult:
    result = MirrorResult()
    files, dirs = await remote_tree(ftp, remote)
    local.mkdir(parents=True, exist_ok=True)
    for d in sorted(dirs):
        (local / d).mkdir(parents=True, exist_ok=True)
    have, have_dirs = await asyncio.to_thread(local_tree, local)
    jobs: list[tuple[str, Job]] = []
    for rel, entry in sorted(files.items()):
        st = have.get(rel)
        if st is not None and _same(entry, st.st_size, st.st_mtime, newer_only=False):
            result.unchanged.append(rel)
            continue

        async def job(session: FTPClient, rel: str = rel, entry: Entry = entry) -> int:
            target, source = local / rel, posixpath.join(remote, rel)
            count = await _verified(session, verifier, rel, lambda: session.download(source, target), source,
                                    target)
            mtime = await _exact_mtime(session, entry, source)
            if mtime is not None:
                os.utime(target, (mtime, mtime))
            return count

        jobs.append((rel, job))
    await _run_jobs(jobs, factory, parallel, result)
    if delete:
        for rel in sorted(set(have) - set(files), reverse=True):
            (local / rel).unlink()
            result.deleted.append(rel)
        for rel in sorted(have_dirs - dirs, key=len, reverse=True):
            shutil.rmtree(local / rel, ignore_errors=True)
            result.deleted.append(rel + "/")
    return result


async def mirror_up(ftp: FTPClient, factory: SessionFactory, local: Path, remote: str, delete: bool = False,
                    parallel: int = 1, verifier: Verifier | None = None) -> MirrorResult:
    result = MirrorResult()
    if not local.is_dir():
        raise FTPError(f"{local} is not a local directory")
    have, have_dirs = await asyncio.to_thread(local_tree, local)
    # Some servers (vsftpd) answer LIST of a missing directory with an empty listing: ask directly.
    if await ftp.is_dir(remote):
        files, dirs = await remote_tree(ftp, remote)
    else:
        await ftp.mkdir(remote)
        files, dirs = {}, set()
    for d in sorted(have_dirs - dirs, key=lambda p: p.count("/")):
        await ftp.mkdir(posixpath.join(remote, d))
    keeps_times = "MFMT" in await ftp.features()
    jobs: list[tuple[str, Job]] = []
    for rel, st in sorted(have.items()):
        entry = files.get(rel)
        if entry is not None and _same(entry, st.st_size, st.st_mtime, newer_only=not keeps_times):
            result.unchanged.append(rel)
            continue

        async def job(session: FTPClient, rel: str = rel, mtime: float = st.st_mtime) -> int:
            source, target = local / rel, posixpath.join(remote, rel)
            count = await _verified(session, verifier, rel, lambda: session.upload(source, target), target, source)
            if keeps_times:
                try:
                    await session.set_mtime(target, mtime)
                except FTPError as exc:
                    session.options.transcript("!!!", f"{target}: the modification time was not kept: {exc}")
            return count

        jobs.append((rel, job))
    await _run_jobs(jobs, factory, parallel, result)
    if delete:
        for rel in sorted(set(files) - set(have), reverse=True):
            await ftp.delete(posixpath.join(remote, rel))
            result.deleted.append(rel)
        for rel in sorted(dirs - have_dirs, key=len, reverse=True):
            await ftp.rmdir(posixpath.join(remote, rel))
            result.deleted.append(rel + "/")
    return result
