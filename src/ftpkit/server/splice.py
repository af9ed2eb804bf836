"""Plain uploads without a copy through Python: the data connection's bytes go socket -> pipe (splice(2) on the
event loop: the kernel moves page references, nothing is copied) -> file (splice(2) in a worker thread, by the
storage backend). Two pipes take turns, as the two buffers of :class:`ftpkit.server.data.DataProtocol` do: while
one batch is written to the file, the kernel fills the other pipe; reading pauses while both are full.

Used for TYPE I uploads without TLS to a backend whose upload takes a pipe (:class:`PipeUpload`); everything else
goes through the reused buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

PIPE_SIZE = 1 << 20
"""Bytes each of the two pipes holds (the kernel may give less: fs.pipe-max-size, a user's pipe pages)."""

_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_MAX_STALLS = 64
_SIOCATMARK = 0x8905  # Linux <linux/sockios.h>: is the socket's read position at the urgent mark?
URGENT_DATA = "urgent data (TCP out-of-band) on the data connection"


def _at_urgent_mark(fd: int) -> bool:
    try:
        return struct.unpack("i", fcntl.ioctl(fd, _SIOCATMARK, b"\0\0\0\0"))[0] != 0
    except OSError:
        return False


@runtime_checkable
class PipeUpload(Protocol):
    """An upload that can take its bytes straight from a pipe (a backend with a file descriptor to splice to)."""

    async def write_from_pipe(self, pipe: int, count: int) -> None:
        """Move exactly ``count`` bytes waiting in the pipe ``pipe`` (its read end) to the upload."""
        ...


@dataclass
class _Pipe:
    read: int
    write: int
    size: int
    filled: int = 0

    @classmethod
    def make(cls) -> _Pipe:
        read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            size = fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # over the system's or the user's pipe limit: the pipe keeps its default size
            size = fcntl.fcntl(write, fcntl.F_GETPIPE_SZ)
        return cls(read, write, size)

    def close(self) -> None:
        for fd in (self.read, self.write):
            with contextlib.suppress(OSError):
                os.close(fd)


class SpliceStream:
    """An upload's data connection as the bare socket and two pipes (see the module's text)."""

    def __init__(self, sock: socket.socket, peer: tuple[str, int], local: tuple[str, int]) -> None:
        self.sock = sock
        self.peer = peer
        self.local = local
        self.received = 0
        self.eof = False
        self.error: OSError | None = None
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        first = _Pipe.make()
        try:
            second = _Pipe.make()
        except OSError:
            first.close()
            raise
        self._pipes = (first, second)
        self._filling: _Pipe | None = first  # the pipe the socket is spliced into (None: both are taken)
        self._batches: deque[_Pipe] = deque()  # full pipes, in order
        self._out: _Pipe | None = None  # the batch handed out last: free again at the next read_batch
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._stalls = 0  # readable events in a row that moved nothing
        self._reading = True
        self._loop.add_reader(self._fd, self._on_readable)

    # --- the event loop's side -------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        pipe = self._filling
        if pipe is None:
            return
        try:
            n = os.splice(self._fd, pipe.write, pipe.size - pipe.filled, flags=_SPLICE_FLAGS)
        except (BlockingIOError, InterruptedError):
            if pipe.filled:
                self._full()  # the socket has bytes (it was readable): the pipe is what is full
                return
            # readable, yet nothing moves into an empty pipe: splice(2) stops at TCP urgent data this way too
            if _at_urgent_mark(self._fd):
                self.error = OSError(errno.EPROTO, URGENT_DATA)
                self._stop_reading()
                self._wake()
                return
            self._stalls += 1  # something else: not forever
            if self._stalls >= _MAX_STALLS:
                self.error = OSError(errno.EPROTO, "the data connection is readable but splice(2) moves nothing")
                self._stop_reading()
                self._wake()
            return
        except OSError as exc:
            self.error = exc
            self._stop_reading()
            self._wake()
            return
        if n == 0:
            # splice(2) also says 0 at TCP urgent data (it cannot read past the urgent mark): only a peek tells
            # the end of the stream from that, and a truncated file must never pass for a complete one
            try:
                at_end = self.sock.recv(1, socket.MSG_PEEK) == b""
            except (BlockingIOError, InterruptedError):
                at_end = False
            except OSError as exc:
                self.error = exc
                at_end = False
            if at_end:
                self.eof = True
            elif self.error is None:
                self.error = OSError(errno.EPROTO, URGENT_DATA)
            self._stop_reading()
            self._wake()
            return
        self._stalls = 0
        pipe.filled += n
        self.received += n
        if pipe.filled >= pipe.size:
            self._full()

    def _full(self) -> None:
        pipe = self._filling
        if pipe is None or pipe.filled == 0:
            return
        self._batches.append(pipe)
        self._filling = self._free_pipe()
        if self._filling is None:
            self._stop_reading()  # both pipes are full: the client waits until the file has caught up
        self._wake()

    def _free_pipe(self) -> _Pipe | None:
        for pipe in self._pipes:
            if pipe is not self._out and pipe not in self._batches and pipe is not self._filling:
                return pipe
        return None

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- what the transfer uses ------------------------------------------------------------------------------
    async def read_batch(self, idle: float) -> tuple[int, int] | None:
        """The next batch: (the read end of a pipe, the bytes waiting in it), a full pipe or what is left at the
        end; ``None`` at the end. The batch must be moved out of the pipe before the next call, which gives the
        pipe back. :class:`TimeoutError` when no byte arrived for ``idle`` seconds; :class:`ConnectionResetError`
        when the connection broke."""
        if self._out is not None:
            self._out.filled = 0
            self._out = None
            if self._filling is None and not (self.eof or self.error or self._closed):
                self._filling = self._free_pipe()
                self._loop.add_reader(self._fd, self._on_readable)
                self._reading = True
        while not self._batches:
            if self.eof or self.error is not None:
                if self._filling is not None and self._filling.filled:
                    self._batches.append(self._filling)  # what arrived before the end
                    self._filling = None
                    break
                if self.error is not None:
                    raise ConnectionResetError(str(self.error) or type(self.error).__name__)
                return None
            seen = self.received
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(idle):
                    await self._waiter
            except TimeoutError:
                if self.received == seen:  # idle means no byte at all, not a batch not yet full
                    raise
            finally:
                self._waiter = None
        pipe = self._out = self._batches.popleft()
        return pipe.read, pipe.filled

    async def close(self, timeout: float = 5.0) -> None:
        self.abort()

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        self.sock.close()
        for pipe in self._pipes:
            pipe.close()
