"""``--metrics-address``: ``/metrics`` (Prometheus text format) and ``/healthz`` over HTTP, on the server's own
event loop.

A scrape renders the registry in microseconds (its labels are bounded), so it runs on the loop and never waits on
FTP, nor FTP on it; a slow or silent HTTP client costs one small task and is dropped after :data:`READ_TIMEOUT`.
``/healthz`` answers 200 while the FTP listener accepts and 503 while the server shuts down (a load balancer then
takes it out of rotation before the sessions are closed). Every response closes its connection (HTTP/1.1 allows
it; Prometheus and load balancers reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

from ftpkit.server.metrics import Metrics

log = logging.getLogger("ftpkit.server")

READ_TIMEOUT = 10.0  # seconds an HTTP client gets to send its request head
MAX_HEAD = 16384  # bytes of request line and headers
MAX_CLIENTS = 64  # HTTP connections at once; more are closed at once

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class MetricsServer:
    def __init__(self, metrics: Metrics, accepting: Callable[[], bool], host: str, port: int) -> None:
        self.metrics = metrics
        self.accepting = accepting
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEAD,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(set(self._clients), timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= MAX_CLIENTS:
            writer.close()
            return
        self._clients.add(task)
        try:
            status, ctype, body = await self._respond(reader)
            head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii")
            writer.write(head + body)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.LimitOverrunError:
            return 431, text, b"request head too long\n"
        except asyncio.IncompleteReadError as exc:
            head = exc.partial
            if b"\n" not in head:
                raise ConnectionResetError("no request") from None
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, text, b"not an HTTP request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, text, b"only GET\n"
        if target == "/metrics":
            body = self.metrics.exposition()
            return 200, CONTENT_TYPE_LATEST, b"" if method == "HEAD" else body
        if target == "/healthz":
            if self.accepting():
                return 200, text, b"ok: accepting FTP connections\n"
            return 503, text, b"shutting down: not accepting FTP connections\n"
        if target == "/":
            return 200, text, b"ftpkit: /metrics (Prometheus), /healthz\n"
        return 404, text, b"not found: /metrics or /healthz\n"
