"""The listening server: accepts control connections, enforces session limits, shuts down gracefully."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftpkit.protocol.hostport import plain_ip
from ftpkit.protocol.replies import Reply
from ftpkit.server.accounts import Accounts
from ftpkit.server.config import ConfigError, ServerConfig
from ftpkit.server.control import ControlConnection, Listener
from ftpkit.server.data import PortPool
from ftpkit.server.defender import Defender, DefenderSettings
from ftpkit.server.events import ServerEvents
from ftpkit.server.hooks import Hooks
from ftpkit.server.metrics import Metrics, State
from ftpkit.server.metrics_http import MetricsServer
from ftpkit.server.proxied import Admission, admit
from ftpkit.server.session import Session, Shared, StorageFactory
from ftpkit.server.storage import LocalStorage
from ftpkit.server.uploads import sweep_partials
from ftpkit.server.workers import IOThreads
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


def default_defender_file() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/ftpkit/bans.json")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ftpkit" / "bans.json"


def defender_settings(cfg: ServerConfig) -> DefenderSettings:
    return DefenderSettings(
        enabled=cfg.defender, threshold=cfg.defender_threshold, observation_time=cfg.defender_observation_time,
        ban_time=cfg.defender_ban_time, ban_increment=cfg.defender_ban_increment, allow=cfg.defender_allow,
        scores={"login_failed": cfg.defender_score_login_failed, "protocol_error": cfg.defender_score_protocol_error,
                "limit_exceeded": cfg.defender_score_limit_exceeded, "tls_failed": cfg.defender_score_tls_failed},
        state_file=cfg.defender_file or default_defender_file(),
    )


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
        self.executor = IOThreads(cfg.io_threads)
        self.metrics = Metrics()
        hooks = Hooks(cfg.hooks, cfg.hook_concurrency)
        events = ServerEvents(self.metrics, hooks, cfg.diagnosis_summary_interval)
        hooks.counts = events
        self.shared = Shared(
            cfg=cfg,
            accounts=Accounts.from_config(cfg),
            pool=PortPool(*cfg.passive_ports, per_source=cfg.passive_ports_per_ip),
            executor=self.executor,
            transfer_log=TransferLog(cfg.xferlog),
            defender=Defender(defender_settings(cfg)),
            storage_factory=storage_factory,
            events=events,
        )
        self._observe(self.metrics.state)
        self.metrics_server: MetricsServer | None = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            try:
                self.shared.tls_context = server_context(str(cfg.tls_cert), str(cfg.tls_key), cfg.tls_max_version,
                                                         strict_sni=cfg.tls_strict_sni)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError("tls_cert", f"cannot load {cfg.tls_cert} / {cfg.tls_key}: {exc}") from None
        self._admitting: set[asyncio.Task[None]] = set()  # reading a PROXY header
        self._server: Listener | None = None
        self._implicit: Listener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = cfg.port
        self.implicit_port: int | None = None

    def _observe(self, state: State) -> None:
        """What a scrape reads of the server's state."""
        shared = self.shared
        state.sessions_open = lambda: len(shared.sessions)
        state.passive_in_use = lambda: len(shared.pool.in_use)
        state.passive_size = lambda: shared.pool.size
        state.bans_active = lambda: sum(1 for ban in list(shared.defender.bans.values()) if ban.until > time.time())
        state.bans_issued = lambda: shared.defender.banned_total
        state.hashed = lambda: shared.accounts.verifier.hashed
        state.cached = lambda: shared.accounts.verifier.cache_hits
        state.hooks_running = lambda: shared.events.hooks.pending
        state.accepting = self.accepting

    def accepting(self) -> bool:
        """The FTP listener accepts connections (``/healthz`` says 200): started and not shutting down."""
        return self._server is not None and self._server.is_serving() and not self.shared.stopping

    async def start(self) -> None:
        await self.shared.accounts.open()
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
        # one partial per listener, not per connection (each control connection keeps its callback)
        accept_main = functools.partial(self._accept, implicit=main_implicit)
        self._server = Listener(self.cfg.host, self.cfg.port, self.cfg.listen_backlog, accept_main)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.cfg.tls_implicit_port is not None:
            accept_implicit = functools.partial(self._accept, implicit=True)
            self._implicit = Listener(self.cfg.host, self.cfg.tls_implicit_port, self.cfg.listen_backlog,
                                      accept_implicit)
            self.implicit_port = self._implicit.sockets[0].getsockname()[1]
        if self.s3 is not None:
            self._sweeper = asyncio.create_task(self.s3.sweep_forever())
        elif self.cfg.upload_mode == "atomic":
            self._sweeper = asyncio.create_task(self._sweep_partials())
        self.shared.events.start()
        if self.cfg.metrics_address is not None:
            host, port = self.cfg.metrics_address
            self.metrics_server = MetricsServer(self.metrics, self.accepting, host, port)
            try:
                await self.metrics_server.start()
            except OSError as exc:
                self.metrics_server = None
                await self.stop(grace=0)
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise OSError(exc.errno, reason, f"{host}:{port} (metrics_address)") from None

    async def _sweep_partials(self) -> None:
        """Remove interrupted uploads' partials older than ``partial_ttl``: at start, then every
        ``partial_sweep_interval`` (or ``partial_ttl`` when that is shorter)."""
        homes = sorted({str(self.cfg.root), *self.shared.accounts.homes()})
        period = self.cfg.sweep_period
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

    def _accept(self, conn: ControlConnection, implicit: bool = False) -> Coroutine[Any, Any, None] | None:
        """A new control connection: the coroutine its task runs (the session's own, so an idle session holds no
        frame of ours), or ``None`` when it was refused (and closed). With the PROXY protocol on, the header is
        read first, in a coroutine of its own."""
        peer = conn.get_extra_info("peername")
        ip = plain_ip(peer[0]) if peer else "?"
        if self.cfg.proxy_protocol != "off" and len(self.shared.sessions) < self.cfg.max_sessions:
            return self._admit(conn, ip, implicit)
        session = self._session(conn, ip, implicit, None)
        return session.run() if session is not None else None

    async def _admit(self, conn: ControlConnection, ip: str, implicit: bool) -> None:
        """Read the PROXY header (before the greeting: the real client), then run the session."""
        task = asyncio.current_task()
        assert task is not None
        self._admitting.add(task)  # for stop(): not among the sessions yet
        try:
            admission = await admit(self.cfg, conn, ip)
        finally:
            self._admitting.discard(task)
        if admission is None:
            return
        ip = plain_ip(admission.client[0]) if admission.client else ip
        session = self._session(conn, ip, implicit, admission)
        if session is not None:
            await session.run()

    def _session(self, conn: ControlConnection, ip: str, implicit: bool, admission: Admission | None
                 ) -> Session | None:
        """The session of a control connection from ``ip``, or ``None`` when the address is banned or a session
        limit is reached: then the client is told so (421) and the connection is closed once that is sent."""
        refusal = None
        ban = self.shared.defender.banned(ip)
        if ban is not None:
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ban.until))
            log.debug("refused %s: banned until %s", ip, until)
            self.shared.events.connection_refused("banned")
            conn.write(Reply.of(421, f"Your address is banned until {until}: too many failed logins "
                                     "or errors.").to_bytes())
            conn.close()
            return None
        if len(self.shared.sessions) >= self.cfg.max_sessions:
            refusal = f"Too many sessions ({self.cfg.max_sessions}); try again later."
        elif self.shared.per_ip[ip] >= self.cfg.max_sessions_per_ip:
            refusal = f"Too many sessions from your address ({self.cfg.max_sessions_per_ip}); try again later."
        elif self.shared.prelogin[ip] >= self.cfg.max_prelogin_per_ip:
            refusal = (f"Too many connections not logged in from your address ({self.cfg.max_prelogin_per_ip}); "
                       "try again later.")
        if refusal is not None:
            log.warning("refused %s: %s", ip, refusal)
            self.shared.events.connection_refused("limit")
            self.shared.defender.record(ip, "limit_exceeded")
            conn.write(Reply.of(421, refusal).to_bytes())
            conn.close()
            return None
        try:
            return Session(self.shared, conn, implicit_tls=implicit, admission=admission)
        except Exception:
            log.exception("session from %s failed", ip)
            conn.abort()
            return None

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
        deadline = time.monotonic() + grace
        tasks = {task for session in self.shared.sessions if (task := session.task) is not None}
        tasks |= self._admitting
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self.shared.events.stop(max(0.0, deadline - time.monotonic()))  # hooks get what is left of the grace
        self.shared.deadlines.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.s3 is not None:
            await self.s3.close()
        await self.shared.accounts.aclose()
        self.shared.transfer_log.close()
        if self.metrics_server is not None:  # the last to go: /healthz said 503 all along the shutdown
            await self.metrics_server.stop()

    async def serve_until_signalled(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGINT/SIGTERM, then stop gracefully; ``ready`` is called once the signals are handled (a
        start-up line printed before would let a SIGTERM sent on reading it kill the process instead)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("signal received: stopping (grace %g s)", self.cfg.shutdown_grace)
        await self.stop()

    async def __aenter__(self) -> FTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace=0)
