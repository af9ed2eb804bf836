"""A raw control-connection client for tests: sends exact bytes and reads replies with the protocol core's reader
(no second codec)."""

from __future__ import annotations

import socket

from ftpkit.protocol.hostport import parse_epsv, parse_pasv
from ftpkit.protocol.replies import Reply, ReplyReader


class Raw:
    def __init__(self, host: str, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.host = host
        self.reader = ReplyReader()
        self.pending: list[Reply] = []
        self.greeting = self.reply()

    def reply(self) -> Reply:
        """The next reply (blocks up to the socket timeout)."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("control connection closed by the server")
            for event in self.reader.feed(data):
                assert isinstance(event, Reply), event
                self.pending.append(event)
        return self.pending.pop(0)

    def send(self, line: bytes | str) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape") + b"\r\n"
        self.sock.sendall(line)

    def cmd(self, line: bytes | str) -> Reply:
        self.send(line)
        return self.reply()

    def login(self, user: str = "alice", password: str = "secret") -> None:
        assert self.cmd(f"USER {user}").code == 331
        reply = self.cmd(f"PASS {password}")
        assert reply.code == 230, reply

    def pasv(self) -> tuple[str, int]:
        reply = self.cmd("PASV")
        assert reply.code == 227, reply
        hp = parse_pasv(reply.text)
        return hp.host, hp.port

    def epsv(self) -> int:
        reply = self.cmd("EPSV")
        assert reply.code == 229, reply
        return parse_epsv(reply.text)

    def closed_by_server(self) -> bool:
        """True when the server has closed the connection (reads until EOF or timeout)."""
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True

    def close(self) -> None:
        self.sock.close()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)
