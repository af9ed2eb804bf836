"""The client's control connection: asyncio streams around the protocol core's :class:`ClientConversation`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from ftpkit.client.errors import ControlConnectionError
from ftpkit.client.net import ConnectFailed, connect, resolve
from ftpkit.client.options import ClientOptions
from ftpkit.protocol.commands import Command
from ftpkit.protocol.conversation import Answer, ClientConversation
from ftpkit.protocol.hostport import plain_ip
from ftpkit.protocol.replies import MalformedReply, Reply
from ftpkit.tls import ControlStream, TLSError, cipher_name, client_context


class NotFTPError(ControlConnectionError):
    """The peer sent something that is not an FTP reply (an SSH banner, an HTTP error ...)."""

    transient = False

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


class Control:
    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.conv = ClientConversation(encoding=options.encoding)
        self.stream: ControlStream | None = None
        self._answers: list[Answer] = []
        self._tls_context: ssl.SSLContext | None = None
        self.session: ssl.SSLSession | None = None
        self.host = ""
        self.port = 0
        self.peer_ip = ""  # the address actually connected to
        self.local_ip = ""

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.peer_ip

    async def open(self, host: str, port: int) -> Reply:
        """Connect and read the greeting."""
        self.host, self.port = host, port
        timeout = self.options.timeout
        try:
            addresses = await resolve(host, port, timeout)
        except socket.gaierror as exc:
            err = ControlConnectionError(f"cannot resolve host name {host!r}: {exc.strerror}")
            err.transient = False
            raise err from None
        except TimeoutError:
            raise ControlConnectionError(f"cannot resolve host name {host!r}: no answer within {timeout:g} s") from None
        sock = await self._connect_first(host, port, addresses)
        await self.adopt(sock, server_hostname=host)
        local = sock.getsockname()
        self.options.transcript("===", f"control connection {self.local_ip}:{local[1]} -> {self.peer_ip}:{port}")
        if self.options.tls == "implicit":
            await self.start_tls()
        return await self.read_reply()

    async def _connect_first(self, host: str, port: int, addresses: list[str]) -> socket.socket:
        """The first of the host's addresses that accepts; each one is tried for the whole timeout."""
        timeout = self.options.timeout
        failure = ConnectFailed("error", "the name has no address")
        for i, address in enumerate(addresses):
            try:
                return await connect(address, port, timeout)
            except ConnectFailed as exc:
                failure = exc
                if i + 1 < len(addresses):
                    self.options.transcript("!!!", f"control connection to {address}:{port}: {exc.detail}; trying "
                                                   f"{addresses[i + 1]}")
        if failure.outcome == "timeout":
            raise ControlConnectionError(
                f"control connection to {host}:{port} timed out after {timeout:g} s: a firewall drops it or the "
                "host is down")
        if failure.outcome == "refused":
            raise ControlConnectionError(f"control connection to {host}:{port} refused: nothing listens on port {port}")
        raise ControlConnectionError(f"control connection to {host}:{port} failed: {failure.detail}")

    @property
    def writer(self) -> ControlStream | None:
        """The control connection while it is open (``None`` once closed)."""
        return self.stream

    @property
    def encrypted(self) -> bool:
        return self.stream is not None and self.stream.encrypted

    def tls_context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = client_context(self.options.verify, self.options.ca_file)
        return self._tls_context

    async def start_tls(self) -> None:
        assert self.stream is not None
        try:
            await self.stream.start_tls(self.tls_context(), server_side=False, server_hostname=self.host,
                                        timeout=self.options.timeout)
        except TLSError as exc:
            err = ControlConnectionError(f"TLS on the control connection to {self.host}:{self.port}: {exc}")
            err.transient = False
            raise err from None
        tls = self.stream.tls
        assert tls is not None
        self.options.transcript("===", f"TLS {tls.version()} {cipher_name(tls) or ''}")

    async def stop_tls(self) -> None:
        assert self.stream is not None
        self.session = self.stream.tls.session if self.stream.tls is not None else self.session
        await self.stream.stop_tls(timeout=self.options.timeout)
        self.options.transcript("===", "the control connection continues in clear (CCC)")

    def tls_session(self) -> ssl.SSLSession | None:
        """The control connection's TLS session, for data connections to resume."""
        if self.stream is not None and self.stream.tls is not None:
            return self.stream.tls.session
        return self.session

    async def adopt(self, sock: socket.socket, server_hostname: str | None = None) -> None:
        """Use an already connected socket as the control connection (the doctor connects by itself)."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        self.stream = ControlStream(reader, writer)
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.host, self.port = server_hostname or peer[0], peer[1]
        self.peer_ip, self.local_ip = plain_ip(peer[0]), plain_ip(local[0])

    async def send_command(self, verb: str, arg: str | None = None) -> None:
        await self.send(Command(verb, arg))

    async def send(self, command: Command) -> None:
        if self.stream is None:
            raise ControlConnectionError("not connected")
        self.options.transcript("-->", command.masked())
        try:
            self.stream.write(self.conv.send(command))
            await self.stream.drain()
        except (ConnectionError, OSError) as exc:
            raise ControlConnectionError(f"control connection lost while sending {command.verb}: {exc}") from None

    async def read_reply(self, timeout: float | None = None) -> Reply:
        """The next reply (preliminary or final)."""
        if self.stream is None:
            raise ControlConnectionError("not connected")
        timeout = self.options.timeout if timeout is None else timeout
        while not self._answers:
            try:
                data = await asyncio.wait_for(self.stream.read(65536), timeout)
            except TimeoutError:
                raise ControlConnectionError(f"no reply from the server within {timeout:g} s") from None
            except TLSError as exc:
                raise ControlConnectionError(f"TLS on the control connection: {exc}") from None
            except (ConnectionError, OSError) as exc:
                raise ControlConnectionError(f"control connection lost: {exc}") from None
            if not data:
                raise ControlConnectionError("the server closed the control connection")
            for event in self.conv.receive_data(data):
                if isinstance(event, MalformedReply):
                    raw = event.raw.decode(self.options.encoding, "replace")[:80]
                    self.options.transcript("<--", raw)
                    raise NotFTPError(f"not an FTP reply: {raw!r} ({event.reason})", raw)
                self._answers.append(event)
        answer = self._answers.pop(0)
        for i, line in enumerate(answer.reply.lines):
            last = i == len(answer.reply.lines) - 1
            prefix = f"{answer.reply.code}{' ' if last else '-'}" if i == 0 or last else ""
            self.options.transcript("<--", prefix + line)
        return answer.reply

    async def command(self, verb: str, arg: str | None = None) -> Reply:
        """Send a command and return its final reply (a preliminary one is read past)."""
        await self.send(Command(verb, arg))
        reply = await self.read_reply()
        while reply.is_preliminary:
            reply = await self.read_reply()
        return reply

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.stream.wait_closed(), 2)
            self.stream = None
