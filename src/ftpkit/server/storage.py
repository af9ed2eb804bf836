"""Storage behind a small async interface; the local file system first.

Paths on the control connection are *virtual*: POSIX paths rooted at the user's home (``/`` is the home).
:meth:`LocalStorage.real` maps one to a real path and refuses anything that would leave the home: ``..`` past the
top is clamped like ``cd /..``, and a symlink whose target lies outside the home gives :class:`StorageError`
(reply 550). Every blocking call runs in the server's worker threads, so a slow disk stalls only the session that
waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import functools
import os
import posixpath
import re
import stat as statmod
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from ftpkit.protocol.hashes import new_hash
from ftpkit.protocol.listing import Facts
from ftpkit.server.uploads import LocalUpload, UploadError, UploadMode, is_internal, partial_size
from ftpkit.server.workers import IOThreads

T = TypeVar("T")

LIST_BATCH = 512
"""Entries whose facts a listing of local storage reads at a time."""
MAX_PATTERN = 255
"""The longest glob pattern taken (NAME_MAX: a longer one cannot be needed to match a name)."""


def glob_matcher(pattern: str | None) -> Callable[[str], bool]:
    """A test of names against a glob pattern (``fnmatch`` rules, case-sensitive; ``None`` matches all).

    Compiled here rather than through ``fnmatch.fnmatchcase``, whose cache keeps up to 32,768 compiled patterns
    for the life of the process: a client sending distinct 4 KiB patterns (about 64 KiB compiled each) would grow
    the server by 2 GiB. The patterns are at most :data:`MAX_PATTERN` characters (checked by the listing code)."""
    if pattern is None:
        return lambda name: True
    match = re.compile(fnmatch.translate(pattern)).match
    return lambda name: match(name) is not None


class StorageError(Exception):
    """A file operation that failed; ``reason`` is fit for a 550/450/552 reply."""

    def __init__(self, reason: str, code: int = 550) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _os_error(exc: OSError, vpath: str) -> StorageError:
    reasons = {
        errno.ENOENT: "No such file or directory",
        errno.EACCES: "Permission denied",
        errno.EPERM: "Permission denied",
        errno.EEXIST: "File exists",
        errno.ENOTDIR: "Not a directory",
        errno.EISDIR: "Is a directory",
        errno.ENOTEMPTY: "Directory not empty",
        errno.ENAMETOOLONG: "File name too long",
        errno.ELOOP: "Too many levels of symbolic links",
    }
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"{vpath}: storage full", 552)
    return StorageError(f"{vpath}: {reasons.get(exc.errno or 0, exc.strerror or 'error')}")


def join_virtual(cwd: str, path: str) -> str:
    """Resolve ``path`` against the virtual ``cwd``; the result is absolute, normalised, never above ``/``."""
    joined = path if path.startswith("/") else posixpath.join(cwd, path)
    parts: list[str] = []
    for part in joined.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def facts_of(name: str, st: os.stat_result) -> Facts:
    return Facts(
        name=name,
        mode=st.st_mode,
        size=st.st_size,
        mtime=st.st_mtime,
        nlink=st.st_nlink,
        unique=f"{st.st_dev:x}U{st.st_ino:x}",
    )


class Download(Protocol):
    """A file being read for a download. ``file`` is a real, seekable file when the backend has one (a binary
    download then goes through sendfile(2): zero-copy), ``None`` otherwise (it is read with :meth:`read`)."""

    size: int
    offset: int

    @property
    def file(self) -> BinaryIO | None: ...

    async def read(self, size: int) -> bytes:
        """The next bytes from ``offset`` on (``b""`` at the end)."""
        ...

    async def close(self) -> None: ...


class Upload(Protocol):
    """An upload in progress: bytes written in order, then committed (visible) or aborted."""

    async def write(self, data: bytes | bytearray | memoryview) -> None: ...

    async def commit(self) -> None:
        """The transfer is complete: make the bytes the file's content (before the 226)."""
        ...

    async def abort(self) -> None:
        """The transfer failed: keep what arrived for a resume where the backend can, never expose it as the file."""
        ...


class Storage(Protocol):
    """What a session needs from a storage backend; :class:`LocalStorage` is the first one.

    Paths are virtual (``/`` is the user's home, already normalised by :func:`join_virtual`); every failure is a
    :class:`StorageError` whose ``reason`` and ``code`` go into the reply. Downloads and uploads are objects of their
    own (:class:`Download`, :class:`Upload`), so a backend without files (object storage) streams them its way.
    """

    async def stat(self, vpath: str) -> Facts: ...

    def listdir(self, vpath: str, pattern: str | None = None) -> AsyncIterator[Facts]:
        """The entries of a directory (matching the glob ``pattern``), in name order, as they come: a backend with
        many entries (object storage pages) never holds them all."""
        ...

    async def open_read(self, vpath: str, offset: int = 0) -> Download:
        """A plain file opened for reading from ``offset`` on."""
        ...

    async def open_upload(self, vpath: str, offset: int = 0, append: bool = False) -> Upload:
        """An upload to ``vpath``: from ``offset`` (``REST``), or after what is there (``APPE``); 0: a new file.
        Its bytes become visible under the name at :meth:`Upload.commit` (atomic backends)."""
        ...

    async def upload_size(self, vpath: str) -> int | None:
        """Bytes an interrupted upload of ``vpath`` left to resume after, or ``None`` when there is none."""
        ...

    async def create_unique(self, vdir: str, stem: str) -> tuple[str, Upload]:
        """A new file in ``vdir`` named ``stem`` or ``stem.N`` (STOU): its name and its upload."""
        ...

    async def mkdir(self, vpath: str) -> None: ...

    async def rmdir(self, vpath: str) -> None: ...

    async def remove(self, vpath: str) -> None: ...

    async def rename(self, src: str, dst: str) -> None: ...

    async def digest(self, vpath: str, algorithm: str, start: int, end: int) -> str:
        """The lower-case hex digest of bytes ``start`` to ``end`` (exclusive) of a plain file, read as RETR reads
        it and hashed as it streams (flat memory); ``algorithm`` is one of :data:`ftpkit.protocol.hashes.
        ALGORITHMS` (:func:`ftpkit.protocol.hashes.new_hash` makes the hash). A file shorter than ``end`` is hashed
        to its end. Cancelling the call stops the reading."""
        ...

    async def set_times(self, vpath: str, mtime: float) -> None:
        """Set the modification time (seconds since the epoch, UTC) of a file or directory."""
        ...

    async def chmod(self, vpath: str, mode: int) -> bool:
        """Set the permission bits (0-0o777); ``False`` when this backend keeps no modes (nothing changed)."""
        ...

    async def free_space(self, vpath: str) -> int | None:
        """Bytes available for uploads in the directory ``vpath``, or ``None`` when the backend cannot tell."""
        ...


DIGEST_CHUNK = 1 << 20
"""Bytes read at a time when hashing (one buffer, reused)."""


@functools.lru_cache(maxsize=4096)
def _resolved_home(home: Path) -> Path:
    """A home's real path, resolved once per home (every login made a storage and walked it with realpath)."""
    return home.resolve()
    # Methods added here later need an object-storage version too: see ftpkit.server.s3 (S3Storage).



class LocalStorage:
    """A user's home on the local file system. One instance per session (it knows the home). A :class:`Storage`."""

    __slots__ = ("_executor", "_home_str", "home", "upload_mode")

    def __init__(self, home: Path, executor: Executor | None, upload_mode: UploadMode = "atomic") -> None:
        self.home = _resolved_home(home)
        self.upload_mode: UploadMode = upload_mode
        self._home_str = str(self.home)
        self._executor = executor

    @property
    def executor(self) -> Executor | None:
        return self._executor

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in a worker thread."""
        if isinstance(self._executor, IOThreads):
            return await self._executor.run(func, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # --- path mapping (blocking: it calls realpath) ------------------------------------------------------
    def real(self, vpath: str) -> str:
        """The real path of a virtual one; raises :class:`StorageError` if it would leave the home."""
        if "\0" in vpath:
            raise StorageError(f"{vpath.replace(chr(0), '^@')}: a NUL byte is not allowed in a path")
        rel = vpath.lstrip("/")
        candidate = os.path.join(self._home_str, rel) if rel else self._home_str
        resolved = os.path.realpath(candidate)
        if os.path.commonpath((self._home_str, resolved)) != self._home_str:
            raise StorageError(f"{vpath}: outside the home directory (permission denied)")
        return resolved

    # --- blocking implementations (run through :meth:`run`) -------------------------------------------------
    def _stat(self, vpath: str) -> Facts:
        try:
            st = os.stat(self.real(vpath))
        except OSError as exc:
            raise _os_error(exc, vpath) from None
        return facts_of(posixpath.basename(vpath) or "/", st)

    def _names(self, vpath: str, pattern: str | None) -> tuple[str, list[str]]:
        """The directory's real path and the names in it (matching ``pattern``), sorted."""
        path = self.real(vpath)
        matches = glob_matcher(pattern)
        try:
            with os.scandir(path) as entries:
                names = [entry.name for entry in entries
                         if not is_internal(entry.name) and matches(entry.name)]  # not an upload's partial file
        except OSError as exc:
            raise _os_error(exc, vpath) from None
        names.sort()
        return path, names

    @staticmethod
    def _facts(path: str, names: list[str]) -> list[Facts]:
        out: list[Facts] = []
        for name in names:
            full = os.path.join(path, name)
            try:
                st = os.stat(full)
            except OSError:
                try:
                    st = os.lstat(full)  # a dangling symlink lists as itself
                except OSError:
                    continue  # gone meanwhile
            out.append(facts_of(name, st))
        return out

    def _open_read(self, vpath: str, offset: int) -> tuple[BinaryIO, int]:
        path = self.real(vpath)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise _os_error(exc, vpath) from None
        st = os.fstat(fh.fileno())
        if not statmod.S_ISREG(st.st_mode):
            fh.close()
            raise StorageError(f"{vpath}: not a plain file")
        if offset:
            fh.seek(offset)
        return fh, st.st_size

    def _open_upload(self, vpath: str, offset: int, append: bool) -> LocalUpload:
        path = self.real(vpath)
        if path == self._home_str:
            raise StorageError(f"{vpath}: Is a directory")
        try:
            return LocalUpload.open(path, offset, append, self.upload_mode)
        except UploadError as exc:
            raise StorageError(f"{vpath}: {exc.reason}", exc.code) from None
        except OSError as exc:
            raise _os_error(exc, vpath) from None

    def _upload_size(self, vpath: str) -> int | None:
        return partial_size(self.real(vpath))

    def _create_unique(self, vdir: str, stem: str) -> tuple[str, LocalUpload]:
        if "\0" in stem or "/" in stem:
            raise StorageError(f"{vdir}: a file name cannot hold a NUL byte or a slash", 553)
        base = self.real(vdir)
        for n in range(1000):
            name = stem if n == 0 else f"{stem}.{n}"
            path = os.path.join(base, name)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _os_error(exc, vdir) from None
            return name, LocalUpload(fd, path, None, resumable=False)  # a name nobody has: written in place
        raise StorageError(f"{vdir}: no unique name found", 450)

    def _call(self, func: Callable[..., Any], vpath: str, *args: Any) -> None:
        try:
            func(self.real(vpath), *args)
        except OSError as exc:
            raise _os_error(exc, vpath) from None

    def _rename(self, src: str, dst: str) -> None:
        real_src, real_dst = self.real(src), self.real(dst)
        if real_src == self._home_str:
            raise StorageError(f"{src}: the home directory cannot be renamed")
        try:
            os.rename(real_src, real_dst)
        except OSError as exc:
            raise _os_error(exc, src) from None

    # --- async interface ----------------------------------------------------------------------------------
    async def stat(self, vpath: str) -> Facts:
        return await self.run(self._stat, vpath)

    async def listdir(self, vpath: str, pattern: str | None = None) -> AsyncIterator[Facts]:
        # Only the names are held (to sort them: about 100 bytes an entry); the facts are read, and the lines sent,
        # LIST_BATCH entries at a time.
        path, names = await self.run(self._names, vpath, pattern)
        for start in range(0, len(names), LIST_BATCH):
            for facts in await self.run(self._facts, path, names[start:start + LIST_BATCH]):
                yield facts

    async def open_read(self, vpath: str, offset: int = 0) -> Download:
        fh, size = await self.run(self._open_read, vpath, offset)
        return _LocalDownload(self, fh, size, offset, vpath)

    async def open_upload(self, vpath: str, offset: int = 0, append: bool = False) -> Upload:
        return _LocalUploadHandle(self, await self.run(self._open_upload, vpath, offset, append), vpath)

    async def upload_size(self, vpath: str) -> int | None:
        return await self.run(self._upload_size, vpath)

    async def create_unique(self, vdir: str, stem: str) -> tuple[str, Upload]:
        name, upload = await self.run(self._create_unique, vdir, stem)
        return name, _LocalUploadHandle(self, upload, posixpath.join(vdir, name))

    async def mkdir(self, vpath: str) -> None:
        await self.run(self._call, os.mkdir, vpath)

    async def rmdir(self, vpath: str) -> None:
        if vpath == "/":
            raise StorageError("/: the home directory cannot be removed")
        await self.run(self._call, os.rmdir, vpath)

    async def remove(self, vpath: str) -> None:
        await self.run(self._remove, vpath)

    def _remove(self, vpath: str) -> None:
        path = self.real(vpath)
        if os.path.isdir(path):
            raise StorageError(f"{vpath}: Is a directory (use RMD)")
        try:
            os.remove(path)
        except OSError as exc:
            raise _os_error(exc, vpath) from None

    async def rename(self, src: str, dst: str) -> None:
        await self.run(self._rename, src, dst)

    # --- integrity and fidelity: digests, times, modes, free space -----------------------------------------
    async def digest(self, vpath: str, algorithm: str, start: int, end: int) -> str:
        stop = threading.Event()
        try:
            return await self.run(self._digest, vpath, algorithm, start, end, stop)
        except asyncio.CancelledError:
            stop.set()  # the worker thread stops at its next chunk
            raise

    def _digest(self, vpath: str, algorithm: str, start: int, end: int, stop: threading.Event) -> str:
        hasher = new_hash(algorithm)
        fh, _ = self._open_read(vpath, start)
        buffer = bytearray(min(DIGEST_CHUNK, max(end - start, 1)))
        view = memoryview(buffer)
        left = end - start
        try:
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(fh.fileno(), start, left, os.POSIX_FADV_SEQUENTIAL)
            while left > 0 and not stop.is_set():
                count = fh.readinto(view[:min(left, len(buffer))])  # type: ignore[attr-defined]
                if not count:
                    break
                hasher.update(view[:count])
                left -= count
        except OSError as exc:
            raise _os_error(exc, vpath) from None
        finally:
            view.release()
            fh.close()
        return hasher.hexdigest()

    async def set_times(self, vpath: str, mtime: float) -> None:
        await self.run(self._set_times, vpath, mtime)

    def _set_times(self, vpath: str, mtime: float) -> None:
        path = self.real(vpath)
        try:
            atime_ns = os.stat(path).st_atime_ns  # only the modification time changes
            os.utime(path, ns=(atime_ns, round(mtime * 1e6) * 1000))  # to the microsecond: what a float holds
        except OSError as exc:
            raise _os_error(exc, vpath) from None
        except (OverflowError, ValueError):
            raise StorageError(f"{vpath}: the time is out of range for this file system", 501) from None

    async def chmod(self, vpath: str, mode: int) -> bool:
        if not 0 <= mode <= 0o777:
            raise StorageError(f"{vpath}: mode {mode:o} is not within 000-777", 501)
        await self.run(self._call, os.chmod, vpath, mode)
        return True

    async def free_space(self, vpath: str) -> int | None:
        return await self.run(self._free_space, vpath)

    def _free_space(self, vpath: str) -> int | None:
        path = self.real(vpath)
        try:
            if not os.path.isdir(path):
                raise StorageError(f"{vpath}: not a directory")
            st = os.statvfs(path)
        except OSError as exc:
            raise _os_error(exc, vpath) from None
        return st.f_bavail * st.f_frsize

    async def write(self, fh: BinaryIO, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.run(fh.write, data)
        except OSError as exc:
            raise _os_error(exc, getattr(fh, "name", "file")) from None



class _LocalDownload:
    """A local file being downloaded: ``file`` goes to sendfile(2); reads run in worker threads."""

    def __init__(self, storage: LocalStorage, fh: BinaryIO, size: int, offset: int, vpath: str) -> None:
        self.storage = storage
        self._fh = fh
        self.size = size
        self.offset = offset
        self.vpath = vpath

    @property
    def file(self) -> BinaryIO | None:
        return self._fh

    async def read(self, size: int) -> bytes:
        try:
            return await self.storage.run(self._fh.read, size)
        except OSError as exc:
            raise _os_error(exc, self.vpath) from None

    async def close(self) -> None:
        # Closing a file opened for reading flushes nothing: close(2) does not wait for the disk, so it needs no
        # trip to a worker thread (one per download saved: they cost the event loop more than the close itself).
        try:
            self._fh.close()
        except OSError as exc:
            raise _os_error(exc, self.vpath) from None


class _LocalUploadHandle:
    """A :class:`LocalUpload` driven from the event loop: every call in a worker thread. An :class:`Upload`."""

    def __init__(self, storage: LocalStorage, upload: LocalUpload, vpath: str) -> None:
        self.storage = storage
        self.upload = upload
        self.vpath = vpath

    async def _run(self, func: Callable[..., None], *args: Any) -> None:
        try:
            await self.storage.run(func, *args)
        except OSError as exc:
            raise _os_error(exc, self.vpath) from None

    async def _run_to_end(self, func: Callable[..., None], *args: Any) -> None:
        """Run a write in a worker thread. Cancelled (ABOR, a lost connection), it still waits for the thread (at
        most one batch): the abort that follows closes the file, and the thread must be done with it by then."""
        future = asyncio.get_running_loop().run_in_executor(self.storage.executor, func, *args)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved: the transfer is aborted anyway
            raise
        except OSError as exc:
            raise _os_error(exc, self.vpath) from None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self._run_to_end(self.upload.write, data)

    async def write_from_pipe(self, pipe: int, count: int) -> None:
        """A :class:`ftpkit.server.splice.PipeUpload`: the bytes go from the pipe to the file in a worker thread
        (the pipe stays the thread's until it is done, see :meth:`_run_to_end`)."""
        await self._run_to_end(self.upload.write_from_pipe, pipe, count)

    async def commit(self) -> None:
        await self._run(self.upload.commit)

    async def abort(self) -> None:
        await self._run(self.upload.abort)
