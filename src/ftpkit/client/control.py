"""The client's control connection: asyncio streams around the protocol core's :class:`ClientConversation`."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from ftpkit.client.errors import ControlConnectionError
from ftpkit.client.options import ClientOptions
from ftpkit.protocol.commands import Command
from ftpkit.protocol.conversation import Answer, ClientConversation
from ftpkit.protocol.hostport import plain_ip
from ftpkit.protocol.replies import MalformedReply, Reply


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
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._answers: list[Answer] = []
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
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=1 << 20), timeout)
        except TimeoutError:
            raise ControlConnectionError(
                f"control connection to {host}:{port} timed out after {timeout:g} s: a firewall drops it or the "
                "host is down") from None
        except ConnectionRefusedError:
            raise ControlConnectionError(
                f"control connection to {host}:{port} refused: nothing listens on port {port}") from None
        except socket.gaierror as exc:
            err = ControlConnectionError(f"cannot resolve host name {host!r}: {exc.strerror}")
            err.transient = False
            raise err from None
        except OSError as exc:
            raise ControlConnectionError(f"control connection to {host}:{port} failed: {exc.strerror or exc}") from None
        peer = self.writer.get_extra_info("peername")
        local = self.writer.get_extra_info("sockname")
        self.peer_ip, self.local_ip = plain_ip(peer[0]), plain_ip(local[0])
        self.options.transcript("===", f"control connection {self.local_ip}:{local[1]} -> {self.peer_ip}:{peer[1]}")
        return await self.read_reply()

    async def adopt(self, sock: socket.socket) -> None:
        """Use an already connected socket as the control connection (the doctor connects by itself)."""
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        peer = self.writer.get_extra_info("peername")
        local = self.writer.get_extra_info("sockname")
        self.host, self.port = peer[0], peer[1]
        self.peer_ip, self.local_ip = plain_ip(peer[0]), plain_ip(local[0])

    async def send_command(self, verb: str, arg: str | None = None) -> None:
        await self.send(Command(verb, arg))

    async def send(self, command: Command) -> None:
        if self.writer is None:
            raise ControlConnectionError("not connected")
        self.options.transcript("-->", command.masked())
        try:
            self.writer.write(self.conv.send(command))
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ControlConnectionError(f"control connection lost while sending {command.verb}: {exc}") from None

    async def read_reply(self, timeout: float | None = None) -> Reply:
        """The next reply (preliminary or final)."""
        assert self.reader is not None
        timeout = self.options.timeout if timeout is None else timeout
        while not self._answers:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except TimeoutError:
                raise ControlConnectionError(f"no reply from the server within {timeout:g} s") from None
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
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            self.writer = None
