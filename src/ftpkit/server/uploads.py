"""Uploads on the local file system that never lose data (``upload_mode = "atomic"``, the default).

An upload to ``dir/name`` writes ``dir/.name.ftpkit-partial`` and renames it onto ``name`` when the transfer is
complete (before the 226), so an interrupted upload leaves the previous version intact and readers never see a
partial file. The partial stays when the transfer fails (reset, abort, even SIGKILL of the server), so the client
can resume: ``REST n`` + ``STOR`` and ``APPE`` continue the partial, not the old version, and ``SIZE`` tells an
uploader how much arrived. A resumed upload of a name without a partial starts from a copy of the file itself
(``copy_file_range``: in the kernel), so readers still never see the file grow.

The partial is held with an exclusive ``flock`` while an upload writes it (released by the kernel when the process
dies); a second upload of the same name at the same moment writes a private temporary file instead, so two clients
never mix their bytes: each rename is whole, the last one wins. Stale partials are removed after ``partial_ttl``
(:func:`sweep_partials`). ``upload_mode = "in-place"`` writes the named file directly, as classic servers do.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from typing import Literal

UploadMode = Literal["atomic", "in-place"]
PARTIAL_SUFFIX = ".ftpkit-partial"
TEMP_SUFFIX = ".ftpkit-upload"
COPY_CHUNK = 64 << 20


class UploadError(Exception):
    """Why an upload cannot start or finish; ``code`` is the reply code (550 by default)."""

    def __init__(self, reason: str, code: int = 550) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def partial_name(name: str) -> str:
    """The partial's file name beside ``name`` (a hash when ``name`` is too long to take the suffix)."""
    candidate = f".{name}{PARTIAL_SUFFIX}"
    if len(os.fsencode(candidate)) <= 255:
        return candidate
    return f".{hashlib.sha256(os.fsencode(name)).hexdigest()[:40]}{PARTIAL_SUFFIX}"


def is_internal(name: str) -> bool:
    """A partial or temporary upload file: not shown in listings."""
    return name.startswith(".") and (name.endswith(PARTIAL_SUFFIX) or name.endswith(TEMP_SUFFIX))


def _copy_prefix(src: str, dst_fd: int, length: int) -> int:
    """Copy the first ``length`` bytes of ``src`` (or all it has) to ``dst_fd`` at its start; bytes copied."""
    try:
        src_fd = os.open(src, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        length = min(length, os.fstat(src_fd).st_size)
        copied = 0
        while copied < length:
            try:
                n = os.copy_file_range(src_fd, dst_fd, min(COPY_CHUNK, length - copied), copied, copied)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                n = os.pwrite(dst_fd, os.pread(src_fd, min(1 << 20, length - copied), copied), copied)
            if n == 0:
                break
            copied += n
        return copied
    finally:
        os.close(src_fd)


def _lock_partial(path: str) -> int | None:
    """The partial at ``path`` opened and exclusively locked, or ``None`` when another upload holds it."""
    for _ in range(8):  # bounded: the path can be renamed away between open and lock by a finishing upload
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file that was renamed onto its name meanwhile: try the new partial
    raise UploadError("the upload's partial file keeps changing; try again", 450)


class LocalUpload:
    """One upload in progress (blocking methods: the storage runs them in worker threads)."""

    def __init__(self, fd: int, final: str, work: str | None, resumable: bool) -> None:
        self.fd = fd
        self.final = final  # the name the bytes go to
        self.work = work  # the partial or temporary file renamed onto ``final`` (None: in place)
        self.resumable = resumable
        self.closed = False
        self.appending = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)  # APPE in place: splice(2) refuses it

    @classmethod
    def open(cls, final: str, offset: int, append: bool, mode: UploadMode) -> LocalUpload:
        if mode == "in-place":
            return cls._in_place(final, offset, append)
        if os.path.isdir(final):
            raise UploadError("Is a directory")
        directory, name = os.path.split(final)
        work = os.path.join(directory, partial_name(name))
        fd = _lock_partial(work)
        resumable = fd is not None
        if fd is None:  # another upload of this name is running: a private file, renamed whole at the end
            fd, work = tempfile.mkstemp(prefix=f".{name[:100]}.", suffix=TEMP_SUFFIX, dir=directory)
            os.fchmod(fd, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours alone: the sweeper leaves it while we write
        try:
            have = os.fstat(fd).st_size
            if append or offset:
                if have == 0:  # nothing partial: continue from the file itself
                    have = _copy_prefix(final, fd, offset if offset else 1 << 62)
                start = have if append else offset
                if start > have:
                    raise UploadError(f"restart offset {offset} is beyond the {have} bytes stored so far", 554)
            else:
                start = 0
            os.ftruncate(fd, start)
            os.lseek(fd, start, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            if not resumable:
                os.unlink(work)
            raise
        return cls(fd, final, work, resumable)

    @classmethod
    def _in_place(cls, final: str, offset: int, append: bool) -> LocalUpload:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else 0)
        fd = os.open(final, flags, 0o644)
        if not append:
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        return cls(fd, final, None, resumable=False)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def write_from_pipe(self, pipe: int, count: int) -> None:
        """Move ``count`` bytes waiting in ``pipe`` to the file (splice(2): no copy through user space)."""
        left = count
        if self.appending:  # a file opened O_APPEND takes no splice(2): through a buffer
            while left > 0:
                chunk = os.read(pipe, min(left, 1 << 20))
                if not chunk:
                    raise OSError(errno.EIO, f"the pipe held {count - left} bytes, not {count}")
                self.write(chunk)
                left -= len(chunk)
            return
        while left > 0:
            n = os.splice(pipe, self.fd, left, flags=os.SPLICE_F_MOVE)
            if n == 0:
                raise OSError(errno.EIO, f"the pipe held {count - left} bytes, not {count}")
            left -= n

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def commit(self) -> None:
        """The upload is complete: its bytes replace ``final`` in one rename."""
        try:
            if self.work is not None:
                os.replace(self.work, self.final)
                self.work = None
        finally:
            self._close()  # releases the lock after the rename: the next upload starts a new partial

    def abort(self) -> None:
        """The upload failed: keep the partial for a resume (a private temporary file, or nothing, goes)."""
        if self.closed:
            return
        try:
            if self.work is not None and (not self.resumable or os.fstat(self.fd).st_size == 0):
                os.unlink(self.work)
        finally:
            self._close()


def partial_size(final: str) -> int | None:
    """Bytes a resumed upload of ``final`` would continue after, when a partial exists (else ``None``)."""
    directory, name = os.path.split(final)
    try:
        size = os.stat(os.path.join(directory, partial_name(name))).st_size
    except OSError:
        return None
    return size or None


def sweep_partials(root: str, max_age: float, now: Callable[[], float] = time.time, limit: int = 100000) -> int:
    """Remove partials under ``root`` not written for ``max_age`` seconds and not held by an upload; how many.

    Bounded: looks at no more than ``limit`` directories."""
    removed = 0
    cutoff = now() - max_age
    for seen, (directory, _dirs, files) in enumerate(os.walk(root)):
        if seen >= limit:
            break
        for name in files:
            if not is_internal(name):
                continue
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if os.fstat(fd).st_mtime > cutoff:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # an upload is writing it right now
                os.unlink(path)
                removed += 1
            except OSError:
                continue
            finally:
                os.close(fd)
    return removed
