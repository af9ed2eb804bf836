"""The listening server: accepts control connections, enforces session limits, shuts down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import ssl
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ftpkit.protocol.hostport import plain_ip
from ftpkit.protocol.replies import Reply
from ftpkit.server.accounts import Accounts
from ftpkit.server.config import ConfigError, ServerConfig
from ftpkit.server.data import PortPool
from ftpkit.server.session import Session, Shared, StorageFactory
from ftpkit.server.storage import LocalStorage
from ftpkit.server.uploads import sweep_partials
from ftpkit.server.xferlog import TransferLog
from ftpkit.tls import server_context

if TYPE_CHECKING:
    from ftpkit.server.s3 import S3Backend

log = logging.getLogger("ftpkit.server")


def _s3_backend(cfg: ServerConfig) -> S3Backend:
    """The object storage backend (its library is the optional ``s3`` extra, imported only when used)."""
    try:
        from ftpkit.server.s3 import S3Backend
    except ImportError as exc:
        raise ConfigError("storage", f"object storage needs the S3 library: pip install 'ftpkit[s3]' ({exc})") from None
    return S3Backend(cfg)


def _can_bind(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class FTPServer:
    """``async with FTPServer(cfg) as server: await server.serve_forever()``; or start()/stop()."""

    def __init__(self, cfg: ServerConfig, storage_factory: StorageFactory | None = None) -> None:
        self.cfg = cfg
        self.s3: S3Backend | None = None
        if storage_factory is None and cfg.storage is not None:
            self.s3 = _s3_backend(cfg)
            storage_factory = self.s3.storage_for
        if storage_factory is None:
            storage_factory = functools.partial(LocalStorage, upload_mode=cfg.upload_mode)
        self.executor = ThreadPoolExecutor(max_workers=cfg.io_threads, thread_name_prefix="ftpkit-io")
        self.shared = Shared(
            cfg=cfg,
            accounts=Accounts.from_config(cfg),
            pool=PortPool(*cfg.passive_ports),
            executor=self.executor,
            transfer_log=TransferLog(cfg.xferlog),
            storage_factory=storage_factory,
        )
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            try:
                self.shared.tls_context = server_context(str(cfg.tls_cert), str(cfg.tls_key), cfg.tls_max_version)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError("tls_cert", f"cannot load {cfg.tls_cert} / {cfg.tls_key}: {exc}") from None
        self._per_ip: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._implicit: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = cfg.port
        self.implicit_port: int | None = None

    async def start(self) -> None:
        if self.s3 is not None:
            await self.s3.open()  # ConfigError naming the setting when the service cannot be used
        if self.cfg.active_from_port_20:
            source = self.cfg.port - 1
            if _can_bind("0.0.0.0" if ":" not in self.cfg.host else "::", source):
                self.shared.active_source_port = source
            else:
                log.warning("active_from_port_20: cannot bind port %d (needs root or CAP_NET_BIND_SERVICE); "
                            "active data connections leave from any port", source)
        main_implicit = self.cfg.tls == "implicit"
        self._server = await asyncio.start_server(
            functools.partial(self._accept, implicit=main_implicit), self.cfg.host, self.cfg.port,
            backlog=self.cfg.listen_backlog, reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.cfg.tls_implicit_port is not None:
            self._implicit = await asyncio.start_server(
                functools.partial(self._accept, implicit=True), self.cfg.host, self.cfg.tls_implicit_port,
                backlog=self.cfg.listen_backlog, reuse_address=True,
            )
            self.implicit_port = self._implicit.sockets[0].getsockname()[1]
        if self.s3 is not None:
            self._sweeper = asyncio.create_task(self.s3.sweep_forever())
        elif self.cfg.upload_mode == "atomic":
            self._sweeper = asyncio.create_task(self._sweep_partials())

    async def _sweep_partials(self) -> None:
        """Remove interrupted uploads' partials older than ``partial_ttl``: at start, then every hour (or ttl)."""
        homes = sorted({str(self.cfg.root), *self.shared.accounts.homes()})
        period = min(3600.0, self.cfg.partial_ttl)
        loop = asyncio.get_running_loop()
        while True:
            for home in homes:
                try:
                    removed = await loop.run_in_executor(self.executor, sweep_partials, home, self.cfg.partial_ttl)
                except OSError as exc:
                    log.warning("removing stale partial uploads under %s: %s", home, exc)
                    continue
                if removed:
                    log.info("removed %d stale partial upload(s) under %s (older than %g s)", removed, home,
                             self.cfg.partial_ttl)
            await asyncio.sleep(period)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, implicit: bool = False) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        ip = plain_ip(peer[0]) if peer else "?"
        try:
            refusal = None
            if len(self.shared.sessions) >= self.cfg.max_sessions:
                refusal = f"Too many sessions ({self.cfg.max_sessions}); try again later."
            elif self._per_ip[ip] >= self.cfg.max_sessions_per_ip:
                refusal = f"Too many sessions from your address ({self.cfg.max_sessions_per_ip}); try again later."
            if refusal is not None:
                log.warning("refused %s: %s", ip, refusal)
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write(Reply.of(421, refusal).to_bytes())
                    await writer.drain()
                writer.close()
                return
            self._per_ip[ip] += 1
            try:
                await Session(self.shared, reader, writer, implicit_tls=implicit).run()
            finally:
                self._per_ip[ip] -= 1
                if self._per_ip[ip] <= 0:
                    del self._per_ip[ip]
        except Exception:
            log.exception("session from %s failed", ip)
            writer.close()
        finally:
            self._tasks.discard(task)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; close idle sessions; let running transfers finish within the grace period."""
        grace = self.cfg.shutdown_grace if grace is None else grace
        for listener in (self._server, self._implicit):
            if listener is not None:
                listener.close()
        self.shared.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for session in list(self.shared.sessions):
            session.wake()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.s3 is not None:
            await self.s3.close()
        self.shared.accounts.close()
        self.shared.transfer_log.close()

    async def serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: stopping (grace %g s)", self.cfg.shutdown_grace)
        await self.stop()

    async def __aenter__(self) -> FTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace=0)
