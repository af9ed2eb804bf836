"""Storage behind a small async interface; the local file system first.

Paths on the control connection are *virtual*: POSIX paths rooted at the user's home (``/`` is the home).
:meth:`LocalStorage.real` maps one to a real path and refuses anything that would leave the home: ``..`` past the
top is clamped like ``cd /..``, and a symlink whose target lies outside the home gives :class:`StorageError`
(reply 550). Every blocking call runs in the server's worker threads, so a slow disk stalls only the session that
waits for it.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import os
import posixpath
import stat as statmod
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ftpkit.protocol.listing import Facts

T = TypeVar("T")


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


class LocalStorage:
    """A user's home on the local file system. One instance per session (it knows the home)."""

    def __init__(self, home: Path, executor: Executor | None) -> None:
        self.home = home.resolve()
        self._home_str = str(self.home)
        self._executor = executor

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in a worker thread."""
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

    def _list(self, vpath: str, pattern: str | None) -> list[Facts]:
        path = self.real(vpath)
        out: list[Facts] = []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if pattern is not None and not fnmatch.fnmatchcase(entry.name, pattern):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=True)
                    except OSError:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                    out.append(facts_of(entry.name, st))
        except OSError as exc:
            raise _os_error(exc, vpath) from None
        out.sort(key=lambda f: f.name)
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

    def _open_write(self, vpath: str, offset: int, append: bool) -> BinaryIO:
        path = self.real(vpath)
        try:
            if append:
                return open(path, "ab")
            if offset:
                fh = open(path, "r+b")  # noqa: SIM115
                fh.seek(offset)
                fh.truncate()
                return fh
            return open(path, "wb")
        except OSError as exc:
            raise _os_error(exc, vpath) from None

    def _create_unique(self, vdir: str, stem: str) -> tuple[str, BinaryIO]:
        base = self.real(vdir)
        for n in range(1000):
            name = stem if n == 0 else f"{stem}.{n}"
            try:
                fd = os.open(os.path.join(base, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _os_error(exc, vdir) from None
            return name, os.fdopen(fd, "wb")
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

    async def listdir(self, vpath: str, pattern: str | None = None) -> list[Facts]:
        return await self.run(self._list, vpath, pattern)

    async def open_read(self, vpath: str, offset: int = 0) -> tuple[BinaryIO, int]:
        return await self.run(self._open_read, vpath, offset)

    async def open_write(self, vpath: str, offset: int = 0, append: bool = False) -> BinaryIO:
        return await self.run(self._open_write, vpath, offset, append)

    async def create_unique(self, vdir: str, stem: str) -> tuple[str, BinaryIO]:
        return await self.run(self._create_unique, vdir, stem)

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

    async def write(self, fh: BinaryIO, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.run(fh.write, data)
        except OSError as exc:
            raise _os_error(exc, getattr(fh, "name", "file")) from None

    async def read(self, fh: BinaryIO, size: int) -> bytes:
        return await self.run(fh.read, size)

    async def close(self, fh: BinaryIO) -> None:
        try:
            await self.run(fh.close)
        except OSError as exc:
            raise _os_error(exc, getattr(fh, "name", "file")) from None
