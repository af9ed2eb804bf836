"""The data connection, with a clear life: announce -> open -> transfer -> close.

- passive (PASV/EPSV): :class:`PassiveListener` binds a port from the configured range on the control
  connection's local address and accepts only a connection from the control connection's peer IP; others are
  closed and logged (RFC 2577 passive-port hijack). It serves one transfer.
- active (PORT/EPRT): :class:`ActiveTarget` connects to the announced address when the transfer starts, optionally
  from the control port minus one (20), as classic servers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, ClassVar, Literal, cast

from ftpkit.protocol.commands import Command
from ftpkit.protocol.hostport import DataMethod, DataMode, HostPort, plain_ip
from ftpkit.server.data_hello import HelloRefused, screen_data_hello
from ftpkit.server.deadlines import Deadline, Deadlines
from ftpkit.server.splice import SpliceStream
from ftpkit.server.xferlog import Direction
from ftpkit.tls import ServerContext, describe_ssl_error

log = logging.getLogger("ftpkit.server")

UPLOAD_BUFFER = 1 << 20
"""Each of the two receive buffers of an upload: one batch written to storage per buffer."""
SMALL_BUFFER = 16 << 10
"""Receive buffer of a download's data connection (a client sends nothing there)."""


class DataConnectionError(Exception):
    """The data connection could not be opened; the text goes into a 425 reply. ``kind`` says how, for the
    server's diagnosis: ``timeout``, ``refused``, ``unreachable``, ``exhausted`` (no passive port), ``error``."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class DataProtocol(asyncio.BufferedProtocol):
    """The data connection's own protocol (public asyncio API only, the same on every Python).

    Received bytes land in one of two reused buffers (``recv_into``, no per-chunk objects): while the transfer
    writes one batch to storage in a worker thread, the kernel fills the other. Reading pauses while both are
    full, so a fast client cannot grow memory. Writes have flow control. TLS is put on with ``loop.start_tls``,
    which hands back a new transport for this same protocol (:meth:`upgraded`).
    """

    def __init__(self, receive_buffer: int, paused: bool) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self._size = receive_buffer
        self._fill: bytearray | None = None
        self._spare: bytearray | None = None
        self._pos = 0
        self._start_paused = paused
        self._reading_paused = False
        self._loop = asyncio.get_running_loop()
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._write_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()

    # --- asyncio callbacks ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are no subclass of it
        self.transport = transport
        if self._start_paused:  # nothing may be read before TLS starts: the ClientHello belongs to the TLS layer
            transport.pause_reading()
            self._reading_paused = True

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._fill is None:
            self._fill = bytearray(self._size)
        return memoryview(self._fill)[self._pos:]

    def buffer_updated(self, nbytes: int) -> None:
        self._pos += nbytes
        self.received += nbytes
        if self._fill is not None and self._pos >= len(self._fill):
            self._pause_reading()  # both buffers are full: the client waits until storage has caught up
            _wake(self._read_waiter)

    def eof_received(self) -> None:
        self.eof = True
        _wake(self._read_waiter)
        # None: the transport closes itself (a data connection is never half-open on purpose)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is not None and self.error is None:
            self.error = exc
        _wake(self._read_waiter)
        _wake(self._write_waiter)
        _wake(self._closed)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        _wake(self._write_waiter)

    # --- what the transfer uses ---------------------------------------------------------------------------
    def upgraded(self, transport: asyncio.Transport) -> None:
        """``loop.start_tls`` gave a TLS transport (reading on it has started)."""
        self.transport = transport
        self._reading_paused = False

    def broken(self) -> ConnectionResetError:
        if self.error is not None:
            return ConnectionResetError(str(self.error) or type(self.error).__name__)
        return ConnectionResetError("the data connection was closed by the other side")

    async def read_batch(self, idle: float) -> memoryview | None:
        """The next batch of received bytes (a full buffer, or what is left at the end); ``None`` at the end.

        The view stays valid until the next call. :class:`TimeoutError` when no byte arrived for ``idle``
        seconds; :class:`ConnectionResetError` when the connection broke."""
        while not self._batch_ready():
            seen = self.received
            self._read_waiter = self._loop.create_future()
            self._resume_reading()
            try:
                async with asyncio.timeout(idle):  # not wait_for: on 3.11 it swallows a cancel (ABOR) racing data
                    await self._read_waiter
            except TimeoutError:
                if self.received == seen:  # idle means no byte at all, not a batch not yet full
                    raise
        if self._fill is None or self._pos == 0:
            if self.error is not None:
                raise self.broken()
            return None  # the end; what arrived before a reset was handed out first (a resume continues it)
        batch, size = self._fill, self._pos
        self._fill, self._spare, self._pos = self._spare or bytearray(self._size), batch, 0
        if not (self.eof or self.lost):
            self._resume_reading()
        return memoryview(batch)[:size]

    async def write(self, data: bytes | bytearray | memoryview, idle: float) -> None:
        """Write; wait while the other side is slow to read (:class:`TimeoutError` after ``idle`` seconds)."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise self.broken()
        self.transport.write(data)
        if self._write_paused:
            self._write_waiter = self._loop.create_future()
            async with asyncio.timeout(idle):
                await self._write_waiter
            if self.lost:
                raise self.broken()

    async def wait_closed(self, timeout: float) -> bool:
        """``True`` when the connection was closed within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):  # no task per call, as wait_for makes on 3.11
                await asyncio.shield(self._closed)
        except TimeoutError:
            return False
        return True

    # --- helpers --------------------------------------------------------------------------------------------
    def _batch_ready(self) -> bool:
        if self.eof or self.lost:
            return True
        return self._fill is not None and self._pos >= len(self._fill)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self._reading_paused = True

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._reading_paused = False



@dataclass
class DataStream:
    """An open data connection with a transport (uploads, TLS): read batches of an upload, write a download, close
    or abort."""

    protocol: DataProtocol
    peer: tuple[str, int]
    local: tuple[str, int]

    @property
    def transport(self) -> asyncio.Transport:
        assert self.protocol.transport is not None
        return self.protocol.transport

    @property
    def received(self) -> int:
        return self.protocol.received

    @property
    def eof(self) -> bool:
        return self.protocol.eof

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> ssl.SSLObject:
        """TLS as the server of this data connection (RFC 4217: the FTP server is the TLS server whichever side
        connected), after the 150 reply, as clients expect."""
        loop = asyncio.get_running_loop()
        plain = self.transport
        if isinstance(context, ServerContext):
            start = loop.time()
            try:
                await screen_data_hello(plain, context, timeout)
            except HelloRefused as exc:
                plain.close()
                raise DataTLSError(str(exc)) from None
            timeout = max(0.001, timeout - (loop.time() - start))
        try:
            tls_transport = await loop.start_tls(plain, self.protocol, context, server_side=True,
                                                 ssl_handshake_timeout=timeout)
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            plain.abort()
            raise DataTLSError(describe_ssl_error(exc)) from None
        if tls_transport is None:
            raise DataTLSError("the client closed the data connection during the TLS handshake")
        self.protocol.upgraded(tls_transport)
        # room for a whole read-ahead chunk: a write of it does not stop for every TLS record
        tls_transport.set_write_buffer_limits(high=4 << 20)
        ssl_object = tls_transport.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return ssl_object

    async def read_batch(self, idle: float) -> memoryview | None:
        return await self.protocol.read_batch(idle)

    async def write(self, data: bytes | bytearray | memoryview, idle: float) -> None:
        await self.protocol.write(data, idle)

    async def close(self, timeout: float = 5.0) -> None:
        """Close once everything written is handed to the kernel. On a TLS connection after sending our
        close_notify, without waiting for the client's, so the 226 is not delayed."""
        transport = self.transport
        if transport.is_closing():
            return
        tls = transport.get_extra_info("ssl_object") is not None
        transport.close()
        if not tls and not await self.protocol.wait_closed(timeout):
            transport.abort()

    def abort(self) -> None:
        transport = self.protocol.transport
        if transport is None:
            return
        tls = transport.get_extra_info("ssl_object")
        transport.abort()
        if isinstance(tls, ssl.SSLObject):
            # OpenSSL drops from its cache the session of a connection freed without a close_notify sent (it takes
            # it for broken): with TLS 1.2, the data connection's session *is* the control connection's, so one
            # aborted transfer (ABOR, a reset, a 426) would refuse every later data connection of the session
            # with 522 under require_session_reuse. A shutdown started here (nothing more is sent: the transport
            # is gone) tells OpenSSL the end was ours.
            with contextlib.suppress(ssl.SSLError, ValueError, OSError):
                tls.unwrap()


UNSENT_LOW_WATER = 16 << 10
"""TCP_NOTSENT_LOWAT of a plain download's data connection: the kernel takes at most this much beyond what the
receive window lets out at once, and reports the socket writable again once less is waiting. The kernel paces the
download, not Python: each writable turn sends as much as the window allows and lets the other sessions run.
Without it, sendfile(2) fills the send buffer (autotuned to megabytes) and the rest goes out when the receiver's
ACKs open the window, on 127.0.0.1 in the receiver's own time; on any network it bounds the kernel memory a
download holds to what is in flight. Measured (bench/results.md, 10 interleaved rounds): curl took 1 GiB at a
median 2,590 MB/s instead of 1,800 with 64 KiB steps and a loop turn after each (server CPU 0.26-0.43 s against
0.50-0.66 s), and the session row's client spent 0.87 s of system time per 1,000 sessions instead of 1.38 s.
16 KiB is what Cloudflare's tuning guide gives (blog.cloudflare.com/http-2-prioritization-with-nginx)."""
_TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux's number where Python does not name it
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK, errno.EOVERFLOW})
"""What sendfile(2) says when the file cannot be sent that way (a file system without it): read and send instead."""


class SocketStream:
    """A plain download's data connection as the bare socket: sendfile(2) and send(2) straight from the event
    loop, with no transport, protocol or read buffer (a download reads nothing and has no TLS). The event loop only
    watches the socket while the kernel's send buffer is full."""

    received: ClassVar[int] = 0  # a download receives nothing

    def __init__(self, sock: socket.socket, peer: tuple[str, int], local: tuple[str, int]) -> None:
        self.sock = sock
        self.peer = peer
        self.local = local
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):  # not a TCP socket (a test's socket pair)
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, UNSENT_LOW_WATER)

    async def sendfile(self, fh: BinaryIO, offset: int, count: int, idle: float) -> int:
        """Send ``count`` bytes of ``fh`` from ``offset`` (fewer at its end); bytes sent. :class:`TimeoutError`
        when the client took nothing for ``idle`` seconds."""
        fd, file_fd = self.sock.fileno(), fh.fileno()
        try:
            sent = os.sendfile(fd, file_fd, offset, count)
            if sent == 0 or sent >= count:
                return sent  # all of it (nearly always, for a small file), or the end of the file
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            if exc.errno not in _NO_SENDFILE:
                raise
            return await self._read_and_send(file_fd, offset, count, idle)
        return await _Pump(self._loop, self.sock, offset + sent, count - sent, file_fd=file_fd).run(idle) + sent

    async def _read_and_send(self, file_fd: int, offset: int, count: int, idle: float) -> int:
        data = await self._loop.run_in_executor(None, os.pread, file_fd, min(count, 1 << 20), offset)
        await self.write(data, idle)
        return len(data)

    async def write(self, data: bytes | bytearray | memoryview, idle: float) -> None:
        """Send all of ``data``; :class:`TimeoutError` when the client took nothing for ``idle`` seconds."""
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            await _Pump(self._loop, self.sock, sent, len(data) - sent, data=memoryview(data)).run(idle)

    async def close(self, timeout: float = 5.0) -> None:
        """Everything sent is in the kernel's hands: the close sends it and then the FIN."""
        self._discard_input()
        self.sock.close()

    def abort(self) -> None:
        self.sock.close()

    def _discard_input(self) -> None:
        """Read what the client sent (nothing, normally): a close with unread bytes would reset the connection and
        could lose the end of the download on the client's side."""
        for _ in range(16):  # bounded: a client that keeps sending only loses its own data connection
            try:
                if not self.sock.recv(65536):
                    return
            except (BlockingIOError, InterruptedError, OSError):
                return


class _Pump:
    """What is left of a download's send after the first call: sent from the event loop's writer callback each time
    the socket is writable (with :data:`UNSENT_LOW_WATER`, when less than that waits unsent), with no task step or
    future per wait. From a file by sendfile(2) (``file_fd``) or from ``data``."""

    __slots__ = ("_data", "_done", "_fd", "_file_fd", "_idle", "_left", "_loop", "_moved", "_position", "_sent",
                 "_sock", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, position: int, count: int,
                 file_fd: int = -1, data: memoryview | None = None) -> None:
        self._loop, self._sock, self._fd, self._file_fd, self._data = loop, sock, sock.fileno(), file_fd, data
        self._position, self._left, self._sent = position, count, 0
        self._done: asyncio.Future[None] = loop.create_future()
        self._idle = 0.0
        self._moved = 0.0  # when bytes last went out
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, idle: float) -> int:
        """Bytes sent: all of them, or fewer when the file ended; :class:`TimeoutError` after ``idle`` seconds
        without progress."""
        self._idle, self._moved = idle, self._loop.time()
        self._loop.add_writer(self._fd, self._on_writable)
        self._timer = self._loop.call_at(self._moved + idle, self._on_timer)
        try:
            await self._done
        finally:
            self._loop.remove_writer(self._fd)
            if self._timer is not None:
                self._timer.cancel()
        return self._sent

    def _on_writable(self) -> None:
        if self._done.done():
            return
        try:
            if self._data is None:
                n = os.sendfile(self._fd, self._file_fd, self._position, self._left)
            else:
                n = self._sock.send(self._data[self._position:self._position + self._left])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._done.set_exception(exc)
            return
        self._position += n
        self._left -= n
        self._sent += n
        if n == 0 or self._left <= 0:  # n == 0: the end of the file (it shrank since it was opened)
            self._done.set_result(None)
        else:
            self._moved = self._loop.time()

    def _on_timer(self) -> None:
        self._timer = None
        if self._done.done():
            return
        due = self._moved + self._idle
        if self._loop.time() >= due:
            self._done.set_exception(TimeoutError())
        else:
            self._timer = self._loop.call_at(due, self._on_timer)


AnyDataStream = DataStream | SocketStream | SpliceStream

StreamKind = Literal["transport", "bare", "splice"]
"""What a data connection becomes: a :class:`DataStream` (uploads to buffers, TLS), a :class:`SocketStream` (plain
downloads) or a :class:`SpliceStream` (plain TYPE I uploads to a backend that takes a pipe)."""


async def _wrap(sock: socket.socket, receive_buffer: int, paused: bool, accepted: bool,
                kind: StreamKind = "transport") -> AnyDataStream:
    """The accepted or connected socket as the stream ``kind`` says."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    peer = sock.getpeername()[:2]
    local = sock.getsockname()[:2]
    addresses = (plain_ip(peer[0]), peer[1]), (plain_ip(local[0]), local[1])
    if kind == "bare":
        return SocketStream(sock, *addresses)
    if kind == "splice":
        try:
            return SpliceStream(sock, *addresses)
        except OSError as exc:  # no pipes (descriptors or pipe pages used up): the buffers do it
            log.info("data connection from %s:%d: no pipes for splice(2) (%s); buffers instead", *peer[:2], exc)
    factory = lambda: DataProtocol(receive_buffer, paused)  # noqa: E731
    if accepted:
        _, protocol = await loop.connect_accepted_socket(factory, sock)
    else:
        _, protocol = await loop.create_connection(factory, sock=sock)
    return DataStream(protocol, *addresses)


class DataTLSError(Exception):
    """TLS on the data connection failed; the text goes into a 522 reply."""


class PortPool:
    """The passive port range, shared by all sessions of one server (one event loop: no locks needed).

    One client address holds at most ``per_source`` ports at once (0: a quarter of the range, at least 4), so a
    single source cannot exhaust the range for everybody else."""

    def __init__(self, low: int, high: int, per_source: int = 0) -> None:
        self.low, self.high = low, high
        self.in_use: set[int] = set()
        self.per_source = per_source or max(4, self.size // 4)
        self.held: dict[int, str] = {}  # port -> the client address it is announced to
        self.by_source: dict[str, int] = {}

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def bind(self, family: int, address: str, source: str = "") -> socket.socket:
        """A listening socket on a free port of the range for a client at ``source``; :class:`DataConnectionError`
        when none is free or that client holds its share already."""
        if self.by_source.get(source, 0) >= self.per_source:
            log.warning("passive ports: %s holds %d ports of %d-%d already (its share)", source or "?",
                        self.by_source[source], self.low, self.high)
            raise DataConnectionError(f"your address holds {self.per_source} passive ports already", "exhausted")
        span = self.size
        start = random.randrange(span)
        for i in range(span):
            port = self.low + (start + i) % span
            if port in self.in_use:
                continue
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.listen(4)
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise DataConnectionError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
            sock.setblocking(False)
            self.in_use.add(port)
            self.held[port] = source
            self.by_source[source] = self.by_source.get(source, 0) + 1
            return sock
        log.warning("passive port range %d-%d exhausted (%d ports in use)", self.low, self.high, len(self.in_use))
        raise DataConnectionError(f"no free passive port in {self.low}-{self.high}", "exhausted")

    def release(self, port: int) -> None:
        self.in_use.discard(port)
        source = self.held.pop(port, None)
        if source is not None:
            left = self.by_source.get(source, 1) - 1
            if left > 0:
                self.by_source[source] = left
            else:
                self.by_source.pop(source, None)


class PassiveListener:
    mode: ClassVar[DataMode] = "passive"

    def __init__(self, pool: PortPool, local_ip: str, peer_ip: str, announced: HostPort, method: DataMethod,
                 session_id: str, accept_timeout: float = 30.0,
                 on_expire: Callable[[PassiveListener], None] | None = None,
                 deadlines: Deadlines | None = None) -> None:
        family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
        self.pool = pool
        self.sock = pool.bind(family, local_ip, peer_ip)
        self.port: int = self.sock.getsockname()[1]
        self.peer_ip = peer_ip
        self.method = method
        self.announced = HostPort(announced.host, self.port)
        self.session_id = session_id
        self.refused: list[str] = []
        self.on_expire = on_expire  # nobody connected in time and no transfer waited for it (the diagnosis)
        self._awaited = False
        self._handed_over = False
        self._loop = asyncio.get_running_loop()
        self._accepted: asyncio.Future[socket.socket] = self._loop.create_future()
        # A reader callback that accepts synchronously: no accepted connection can be lost in a cancelled task.
        self._loop.add_reader(self.sock.fileno(), self._on_connection)
        # the server's shared deadlines when given (nearly every expiry is cancelled: see server/deadlines.py)
        self._expiry: Deadline | asyncio.TimerHandle = (
            deadlines.call_later(accept_timeout, self._expire, accept_timeout) if deadlines is not None
            else self._loop.call_later(accept_timeout, self._expire, accept_timeout))

    def _expire(self, timeout: float) -> None:
        """Nobody connected in time: stop listening and give the port back to the range."""
        if not self._accepted.done():
            self._accepted.set_exception(DataConnectionError(
                f"no data connection to passive port {self.announced} within {timeout:g} s", "timeout"))
            self._accepted.exception()  # retrieved: no "never retrieved" warning if no transfer comes
            self._stop_listening()
            if self.on_expire is not None and not self._awaited:
                self.on_expire(self)

    def _on_connection(self) -> None:
        for _ in range(64):  # bounded: at most what the backlog holds
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._stop_listening()
                return
            if plain_ip(addr[0]) != self.peer_ip or self._accepted.done():
                self.refused.append(f"{addr[0]}:{addr[1]}")
                log.warning("[%s] passive port %d: refused a connection from %s:%d (the control connection "
                            "is from %s)", self.session_id, self.port, addr[0], addr[1], self.peer_ip)
                conn.close()
                continue
            self._accepted.set_result(conn)
            self._stop_listening()  # one connection, one transfer: the port goes back to the range now
            return

    async def open(self, timeout: float, receive_buffer: int = SMALL_BUFFER, paused: bool = False,
                   kind: StreamKind = "transport") -> AnyDataStream:
        """Wait for the client's connection; ``paused``: read nothing before TLS starts; ``kind``: see
        :data:`StreamKind`."""
        self._awaited = True
        try:
            if not self._accepted.done():  # most clients connect before they send the command: no wait, no timer
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._accepted)
        except TimeoutError:
            raise DataConnectionError(
                f"no data connection to passive port {self.announced} within {timeout:g} s", "timeout"
            ) from None
        finally:
            self._stop_listening()
        conn = self._accepted.result()  # the expiry's DataConnectionError when nobody connected in time
        self._handed_over = True
        return await _wrap(conn, receive_buffer, paused, accepted=True, kind=kind)

    def _stop_listening(self) -> None:
        self._expiry.cancel()
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.pool.release(self.port)

    def close(self) -> None:
        self._stop_listening()
        if self._accepted.done() and not self._accepted.cancelled():
            if not self._handed_over and self._accepted.exception() is None:
                self._accepted.result().close()
        else:
            self._accepted.cancel()

    def describe(self) -> str:
        return f"passive ({self.method}) {self.announced}"


class ActiveTarget:
    mode: ClassVar[DataMode] = "active"

    def __init__(self, target: HostPort, method: DataMethod, source: tuple[str, int] | None) -> None:
        self.announced = target
        self.method = method
        self.source = source  # (local ip, port) to connect from, e.g. port 20

    async def open(self, timeout: float, receive_buffer: int = SMALL_BUFFER, paused: bool = False,
                   kind: StreamKind = "transport") -> AnyDataStream:
        """Connect to the announced address; ``paused``: read nothing before TLS starts; ``kind``: see
        :data:`StreamKind`."""
        family = socket.AF_INET6 if self.announced.family == 2 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            if self.source is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(self.source)
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, (self.announced.host, self.announced.port))
        except TimeoutError:
            sock.close()
            raise DataConnectionError(f"connecting to {self.announced} timed out after {timeout:g} s",
                                      "timeout") from None
        except OSError as exc:
            sock.close()
            raise DataConnectionError(f"cannot connect to {self.announced}: {exc.strerror or exc}",
                                      _connect_failure(exc)) from None
        except BaseException:
            sock.close()
            raise
        return await _wrap(sock, receive_buffer, paused, accepted=False, kind=kind)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"active ({self.method}) {self.announced}"


def _connect_failure(exc: OSError) -> str:
    if exc.errno == errno.ECONNREFUSED:
        return "refused"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
        return "unreachable"  # an ICMP reject (host prohibited), or no route
    return "error"


DataChannel = PassiveListener | ActiveTarget


@dataclass
class Transfer:
    command: Command
    path: str
    direction: Direction
    channel: DataChannel
    started: float = field(default_factory=time.monotonic)
    bytes: int = 0
    task: asyncio.Task[None] | None = None
    stream: AnyDataStream | None = None

    @property
    def progress(self) -> int:
        """Bytes moved so far (an upload's as they arrive)."""
        if self.direction == "i" and self.stream is not None:
            return self.stream.received
        return self.bytes
