"""The server's end of a control connection on the bare socket: the FTP port's listener accepts in its reader
callback, and each :class:`ControlConnection` reads and writes its socket itself, with no asyncio transport,
protocol or accept task (a session is a dozen commands: the transport's machinery per connection and per reply
was a share of its CPU worth saving, bench/results.md).

A session waits for its next command without a read task per command: bytes received are taken at once if there
are some (:meth:`ServerControlStream.read_nowait`), and otherwise the session's own wake-up future is set when
more arrive. What the client sends while the session does not read (a pipelining flood during a transfer) stops
in the kernel's buffers: reading pauses beyond :data:`READ_LIMIT`. A reply the kernel does not take at once waits
in the connection's buffer, and :meth:`ControlConnection.drain` waits while more than :data:`WRITE_HIGH` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from ftpkit.tls import READ_SIZE, ControlStream

log = logging.getLogger("ftpkit.server")

READ_LIMIT = 65536
"""Bytes received and not yet taken beyond which the connection is not read (the kernel holds the rest)."""
WRITE_HIGH = 65536
"""Bytes of replies waiting for the kernel beyond which :meth:`ControlConnection.drain` waits (asyncio's default)."""
WRITE_LOW = 16384
"""... until no more than this many wait."""
ACCEPT_RETRY = 1.0
"""Seconds the listener stops accepting when the process is out of descriptors or memory (as asyncio does)."""
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

OnConnection = Callable[["ControlConnection"], "Coroutine[Any, Any, None] | None"]
"""Called with each new connection: the coroutine its task runs, or ``None`` (refused, closing already)."""


class ControlConnection:
    """Bytes in, replies out, with the reading and writing halves ``ControlStream`` expects of a reader and a
    writer (``read``; ``write``, ``drain``, ``close``, ``wait_closed``, ``get_extra_info``, ``transport``)."""

    # Slots: one per control connection, held by the thousand (bench/results.md, idle sessions).
    __slots__ = (
        "_buffer", "_closed", "_closing", "_drain_waiters", "_eof", "_error", "_fd", "_local", "_loop", "_lost",
        "_out", "_peer", "_reading", "_sock", "_waiter", "_write_paused", "task",
    )

    def __init__(self, sock: socket.socket, peer: Any, on_connection: OnConnection) -> None:
        """``sock``: an accepted, non-blocking TCP socket from ``peer`` (what accept said); the coroutine
        ``on_connection`` returns (the session) runs as the connection's task."""
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._peer = peer
        try:
            self._local = sock.getsockname()
        except OSError:  # reset already: the session only says goodbye to it
            self._local = ("::", 0) if sock.family == socket.AF_INET6 else ("0.0.0.0", 0)
        # Bytes, not bytearrays: an idle connection holds no buffer of its own, and a command received in one piece
        # is taken as it came, uncopied.
        self._buffer = b""  # received, not taken yet
        self._out: bytes | bytearray = b""  # replies the kernel did not take yet (a bytearray while there are some)
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False  # the socket is closed
        self._closing = False
        self._reading = True
        self._waiter: asyncio.Future[None] | None = None  # woken when bytes, the end or the loss arrive
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None  # made by the first drain that waits
        self._closed: asyncio.Future[None] | None = None  # made by wait_closed only if the connection is still up
        self._loop.add_reader(self._fd, self._on_readable)
        self.task: asyncio.Task[None] | None = None
        coro = on_connection(self)
        if coro is not None:
            self.task = self._loop.create_task(coro)

    @property
    def transport(self) -> ControlConnection:
        """What ``ControlStream.write_pending`` asks (``is_closing``, ``get_write_buffer_size``): this object."""
        return self

    # --- the event loop's side ------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # a reset
            self._lose(exc)
            return
        if not data:
            self._stop_reading()
            self._eof = True  # half-open: the replies to what came before the end still go out
            self._wake()
            return
        self._buffer = self._buffer + data if self._buffer else data
        if len(self._buffer) > READ_LIMIT:
            self._stop_reading()
        self._wake()

    def _on_writable(self) -> None:
        out = self._out
        assert isinstance(out, bytearray)  # the writer is added with the first bytes the kernel did not take
        try:
            n = self._sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        del out[:n]
        if out:
            if self._write_paused and len(out) <= WRITE_LOW:
                self._resume_writing()
            return
        self._out = b""
        self._loop.remove_writer(self._fd)
        self._resume_writing()
        if self._closing:
            self._lose(None)

    def _stop_reading(self) -> None:
        if self._reading and not self._lost:
            self._loop.remove_reader(self._fd)
        self._reading = False

    def _lose(self, exc: BaseException | None) -> None:
        """The end: the socket is closed and everybody waiting is woken (asyncio's ``connection_lost``)."""
        if self._lost:
            return
        self._stop_reading()
        if self._out:
            self._loop.remove_writer(self._fd)
            self._out = b""
        self._lost = True
        self._closing = True
        self._sock.close()
        if exc is not None:
            self._error = exc
        self._eof = True
        self._wake()
        self._resume_writing()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def _resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # --- reading --------------------------------------------------------------------------------------------
    def take(self, n: int = READ_SIZE) -> bytes | None:
        """At most ``n`` bytes of what arrived and was not taken yet; ``b""`` at the end of the stream, ``None``
        when nothing came yet. Raises the connection's error when it broke."""
        data = self._buffer
        if data:
            if len(data) > n:
                data, self._buffer = data[:n], data[n:]
            else:
                self._buffer = b""
            if not self._reading and not self._eof and not self._closing and len(self._buffer) <= READ_LIMIT:
                self._loop.add_reader(self._fd, self._on_readable)
                self._reading = True
            return data
        if self._error is not None:
            raise self._error
        return b"" if self._eof else None

    def wake_on_input(self, waiter: asyncio.Future[None] | None) -> None:
        """Set ``waiter``'s result when bytes, the end or the loss arrive (``None``: no more)."""
        self._waiter = waiter

    async def read(self, n: int = READ_SIZE) -> bytes:
        """What ``StreamReader.read`` does: at most ``n`` bytes, waiting for some; ``b""`` at the end."""
        while True:
            data = self.take(n)
            if data is not None:
                return data
            waiter = self._loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- writing --------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send ``data``: what the kernel does not take at once waits here (and is sent before a close)."""
        if self._closing:
            return  # as a closed transport does: the session learns of the loss from drain or its next read
        if not self._out:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._lose(exc)
                return
            if n == len(data):
                return
            self._loop.add_writer(self._fd, self._on_writable)
            self._out = bytearray(memoryview(data)[n:])
        else:
            self._out += data
        if len(self._out) > WRITE_HIGH:
            self._write_paused = True

    @property
    def lost(self) -> bool:
        """The socket is closed (everything written was sent, or the connection broke)."""
        return self._lost

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return len(self._out)

    async def drain(self) -> None:
        """What ``StreamWriter.drain`` does: wait while more than :data:`WRITE_HIGH` bytes wait for the kernel;
        :class:`ConnectionResetError` when the connection is lost."""
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._write_paused:
            return
        waiter = self._loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        await waiter
        if self._lost:
            raise ConnectionResetError("Connection lost")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "sockname":
            return self._local
        if name == "socket":
            return self._sock
        return default

    def close(self) -> None:
        """Stop reading; close once the replies waiting are sent (at once when none are)."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._out:
            self._lose(None)

    def abort(self) -> None:
        self._lose(None)

    async def wait_closed(self) -> None:
        if self._lost:
            return  # nearly always by the session's end: no future, no shield
        if self._closed is None:
            self._closed = self._loop.create_future()
        await asyncio.shield(self._closed)


class Listener:
    """The FTP port: listening sockets whose reader callback accepts and makes each connection a
    :class:`ControlConnection` with its session task (what ``loop.create_server`` does, without a transport and an
    accept task per connection)."""

    def __init__(self, host: str, port: int, backlog: int, on_connection: OnConnection) -> None:
        self._loop = asyncio.get_running_loop()
        self._backlog = backlog
        self._on_connection = on_connection
        self._serving = True
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # "::" is IPv6 only, as asyncio has it
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sockets = (sock,)
        self._loop.add_reader(sock.fileno(), self._on_acceptable)

    def is_serving(self) -> bool:
        return self._serving

    def _on_acceptable(self) -> None:
        listening = self.sockets[0]
        for _ in range(self._backlog):  # bounded: at most what the backlog holds
            try:
                sock, addr = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error("cannot accept a control connection: %s; trying again in %g s", exc.strerror,
                          ACCEPT_RETRY)
                self._loop.remove_reader(listening.fileno())
                self._loop.call_later(ACCEPT_RETRY, self._resume)
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # a connection reset already refuses options; its session sees it
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ControlConnection(sock, addr, self._on_connection)

    def _resume(self) -> None:
        if self._serving:
            self._loop.add_reader(self.sockets[0].fileno(), self._on_acceptable)

    def close(self) -> None:
        """Stop accepting (the sessions go on)."""
        if not self._serving:
            return
        self._serving = False
        listening = self.sockets[0]
        self._loop.remove_reader(listening.fileno())
        listening.close()


class ServerControlStream(ControlStream):
    """The session's control connection: :class:`ControlStream` on a :class:`ControlConnection`, which can also
    be read without waiting."""

    __slots__ = ("conn",)

    def __init__(self, conn: ControlConnection, early: bytes = b"") -> None:
        super().__init__(conn, conn, early)
        self.conn = conn

    def read_nowait(self) -> bytes | None:
        """The clear text received so far (``b""`` at the end of the stream), or ``None`` when there is none yet
        (then :meth:`wake_on_input` says when to try again)."""
        if self._plain_leftover:
            data, self._plain_leftover = self._plain_leftover, b""
            return data
        if self.tls is None:
            return self.conn.take()
        assert self._in is not None
        while True:
            clear = self._decrypted(READ_SIZE)
            if clear is not None:
                return clear
            chunk = self.conn.take()
            if chunk is None:
                return None  # a TLS record is not complete yet
            if not chunk:
                self._in.write_eof()
                return b""  # the peer went away without close_notify
            self._in.write(chunk)

    def wake_on_input(self, waiter: asyncio.Future[None] | None) -> None:
        self.conn.wake_on_input(waiter)
