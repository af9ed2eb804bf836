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
import random
import socket
import ssl
import time
from dataclasses import dataclass, field

from ftpkit.protocol.commands import Command
from ftpkit.protocol.hostport import HostPort, plain_ip
from ftpkit.tls import describe_ssl_error

log = logging.getLogger("ftpkit.server")

DATA_BUFFER = 1 << 20
"""Stream buffer limit of a data connection: large reads mean few Python iterations per MiB."""


class DataConnectionError(Exception):
    """The data connection could not be opened; the text goes into a 425 reply."""


@dataclass
class DataStream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: tuple[str, int]
    local: tuple[str, int]

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> ssl.SSLObject:
        """TLS as the server of this data connection (RFC 4217: the FTP server is the TLS server whichever side
        connected), after the 150 reply, as clients expect."""
        loop = asyncio.get_running_loop()
        transport = self.writer.transport
        protocol = transport.get_protocol()
        try:
            tls_transport = await loop.start_tls(transport, protocol, context, server_side=True,
                                                 ssl_handshake_timeout=timeout)
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            transport.close()
            raise DataTLSError(describe_ssl_error(exc)) from None
        if tls_transport is None:
            raise DataTLSError("the client closed the data connection during the TLS handshake")
        # What StreamWriter.start_tls does, with server_side=True (it guesses the side from a callback that a
        # data connection does not have). A new StreamWriter would close the plain transport when collected.
        self.writer._transport = tls_transport  # type: ignore[attr-defined]
        protocol._replace_writer(self.writer)  # type: ignore[attr-defined]
        ssl_object = tls_transport.get_extra_info("ssl_object")
        assert ssl_object is not None
        return ssl_object

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError, ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


async def _wrap(sock: socket.socket) -> DataStream:
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=DATA_BUFFER)
    peer = sock.getpeername()[:2]
    local = sock.getsockname()[:2]
    return DataStream(reader, writer, (plain_ip(peer[0]), peer[1]), (plain_ip(local[0]), local[1]))


class DataTLSError(Exception):
    """TLS on the data connection failed; the text goes into a 522 reply."""


class PortPool:
    """The passive port range, shared by all sessions of one server (one event loop: no locks needed)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.in_use: set[int] = set()

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def bind(self, family: int, address: str) -> socket.socket:
        """A listening socket on a free port of the range; :class:`DataConnectionError` when none is free."""
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
            return sock
        log.warning("passive port range %d-%d exhausted (%d ports in use)", self.low, self.high, len(self.in_use))
        raise DataConnectionError(f"no free passive port in {self.low}-{self.high}")

    def release(self, port: int) -> None:
        self.in_use.discard(port)


class PassiveListener:
    mode = "passive"

    def __init__(self, pool: PortPool, local_ip: str, peer_ip: str, announced: HostPort, method: str,
                 session_id: str, accept_timeout: float = 30.0) -> None:
        family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
        self.pool = pool
        self.sock = pool.bind(family, local_ip)
        self.port: int = self.sock.getsockname()[1]
        self.peer_ip = peer_ip
        self.method = method
        self.announced = HostPort(announced.host, self.port)
        self.session_id = session_id
        self.refused: list[str] = []
        self._handed_over = False
        self._loop = asyncio.get_running_loop()
        self._accepted: asyncio.Future[socket.socket] = self._loop.create_future()
        # A reader callback that accepts synchronously: no accepted connection can be lost in a cancelled task.
        self._loop.add_reader(self.sock.fileno(), self._on_connection)
        self._expiry = self._loop.call_later(accept_timeout, self._expire, accept_timeout)

    def _expire(self, timeout: float) -> None:
        """Nobody connected in time: stop listening and give the port back to the range."""
        if not self._accepted.done():
            self._accepted.set_exception(DataConnectionError(
                f"no data connection to passive port {self.announced} within {timeout:g} s"))
            self._accepted.exception()  # retrieved: no "never retrieved" warning if no transfer comes
            self._stop_listening()

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

    async def open(self, timeout: float) -> DataStream:
        try:
            conn = await asyncio.wait_for(asyncio.shield(self._accepted), timeout)
        except TimeoutError:
            raise DataConnectionError(
                f"no data connection to passive port {self.announced} within {timeout:g} s"
            ) from None
        finally:
            self._stop_listening()
        self._handed_over = True
        return await _wrap(conn)

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
    mode = "active"

    def __init__(self, target: HostPort, method: str, source: tuple[str, int] | None) -> None:
        self.announced = target
        self.method = method
        self.source = source  # (local ip, port) to connect from, e.g. port 20

    async def open(self, timeout: float) -> DataStream:
        family = socket.AF_INET6 if self.announced.family == 2 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            if self.source is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(self.source)
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (self.announced.host, self.announced.port)), timeout
            )
        except TimeoutError:
            sock.close()
            raise DataConnectionError(f"connecting to {self.announced} timed out after {timeout:g} s") from None
        except OSError as exc:
            sock.close()
            raise DataConnectionError(f"cannot connect to {self.announced}: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        return await _wrap(sock)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"active ({self.method}) {self.announced}"


DataChannel = PassiveListener | ActiveTarget


@dataclass
class Transfer:
    command: Command
    path: str
    direction: str  # "o" outgoing (download), "i" incoming (upload)
    channel: DataChannel
    started: float = field(default_factory=time.monotonic)
    bytes: int = 0
    task: asyncio.Task[None] | None = None
    stream: DataStream | None = None
