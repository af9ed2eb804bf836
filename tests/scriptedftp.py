"""A scripted FTP server for tests of what no real server sends: each verb gets the reply the test gives, over a
real TCP connection on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


@contextmanager
def scripted_server(replies: dict[str, bytes]) -> Iterator[tuple[int, list[str]]]:
    """A TCP server on loopback that greets, logs in anyone and answers each verb with ``replies[verb]`` (502 when
    not given); yields its port and the command lines it received, from every connection, in order."""
    answers = {"USER": b"331 Password.\r\n", "PASS": b"230 Logged in.\r\n", "SYST": b"215 UNIX Type: L8\r\n",
               "OPTS": b"200 OK.\r\n", "QUIT": b"221 Bye.\r\n", **replies}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    received: list[str] = []

    def session(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 Scripted.\r\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                received.append(line)
                conn.sendall(answers.get(line.split(" ")[0].upper(), b"502 Not here.\r\n"))
                if line.upper() == "QUIT":
                    return

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=session, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], received
    finally:
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        listener.close()


@contextmanager
def dropping_listener(address: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """A port on ``address`` whose SYNs go unanswered, as behind a firewall that drops them: a listener with a
    backlog of 0 whose one queue place is taken (Linux drops a SYN when the accept queue is full). Yields the port."""
    listener = socket.socket()
    listener.bind((address, port))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname()[:2], timeout=5)
    try:
        yield listener.getsockname()[1]
    finally:
        filler.close()
        listener.close()
