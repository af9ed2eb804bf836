"""The server's end of a control connection at the transport level: an :class:`asyncio.Protocol` that keeps what
arrived until the session takes it, and the session's :class:`ControlStream` on it.

A session waits for its next command without a read task per command (what ``asyncio.StreamReader`` needs):
bytes received are taken at once if there are some (:meth:`ServerControlStream.read_nowait`), and otherwise the
session's own wake-up future is set when more arrive. What the client sends while the session does not read (a
pipelining flood during a transfer) stops in the kernel's buffers: reading pauses beyond :data:`READ_LIMIT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

from ftpkit.tls import READ_SIZE, ControlStream

READ_LIMIT = 65536
"""Bytes received and not yet taken beyond which the connection is not read (the kernel holds the rest)."""


class ControlConnection(asyncio.Protocol):
    """Bytes in, replies out, with the reading and writing halves ``ControlStream`` expects of a reader and a
    writer (``read``; ``write``, ``drain``, ``close``, ``wait_closed``, ``get_extra_info``, ``transport``)."""

    # Slots: one per control connection, held by the thousand (bench/results.md, idle sessions).
    __slots__ = (
        "_buffer", "_closed", "_drain_waiters", "_eof", "_error", "_loop", "_lost", "_on_connection",
        "_reading_paused", "_transport", "_waiter", "_write_paused", "task",
    )

    def __init__(self, on_connection: Callable[[ControlConnection], Coroutine[Any, Any, None]]) -> None:
        self._on_connection = on_connection
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None  # set in connection_made, before the session starts
        self.task: asyncio.Task[None] | None = None
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None  # woken when bytes, the end or the loss arrive
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] | None = None  # made by wait_closed only if the connection is still up

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    # --- asyncio callbacks ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are no subclass of it
        self._transport = transport
        self.task = self._loop.create_task(self._on_connection(self))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_LIMIT and not self._reading_paused:
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # half-open: the replies to what came before the end still go out

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None:
            self._error = exc
        self._eof = True
        self._wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # --- reading --------------------------------------------------------------------------------------------
    def take(self, n: int = READ_SIZE) -> bytes | None:
        """At most ``n`` bytes of what arrived and was not taken yet; ``b""`` at the end of the stream, ``None``
        when nothing came yet. Raises the connection's error when it broke."""
        if self._buffer:
            if len(self._buffer) > n:
                data = bytes(self._buffer[:n])
                del self._buffer[:n]
            else:
                data = bytes(self._buffer)
                self._buffer.clear()
            if self._reading_paused and len(self._buffer) <= READ_LIMIT and not self.transport.is_closing():
                self.transport.resume_reading()
                self._reading_paused = False
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
        self.transport.write(data)

    async def drain(self) -> None:
        """What ``StreamWriter.drain`` does: wait while the transport's buffer is above its high-water mark;
        :class:`ConnectionResetError` when the connection is lost."""
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._write_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter
        if self._lost:
            raise ConnectionResetError("Connection lost")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def close(self) -> None:
        self.transport.close()

    async def wait_closed(self) -> None:
        if self._lost:
            return  # nearly always by the session's end: no future, no shield
        if self._closed is None:
            self._closed = self._loop.create_future()
        await asyncio.shield(self._closed)


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
