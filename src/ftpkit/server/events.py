"""What happens in the server, told once: the command handlers call one method per event
(``s.shared.events.data_failed(s, t, exc)``), and this module classifies it (:mod:`ftpkit.server.diagnose`), logs
it, counts it (:mod:`ftpkit.server.metrics`), folds repeats into a periodic summary line and runs the event hooks
(:mod:`ftpkit.server.hooks`).

A classified problem is logged once, at warning level (info for a warning that failed nothing), with its code,
summary and advice in the text; JSON logs carry it whole in a ``diagnosis`` field. Its hint (a short cause and
remedy) goes into the reply the client gets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ftpkit.server import diagnose
from ftpkit.server.data import PassiveListener
from ftpkit.server.diagnose import Diagnosis, PassiveFacts, RepeatSummary
from ftpkit.server.hooks import Hooks
from ftpkit.server.metrics import Metrics
from ftpkit.server.xferlog import TransferRecord

if TYPE_CHECKING:
    from ftpkit.server.data import DataConnectionError, Transfer
    from ftpkit.server.session import Session

log = logging.getLogger("ftpkit.server")

PASSIVE_MEMORY = 10000  # client addresses whose recent passive successes are remembered
PASSIVE_RECENT = 3600.0  # seconds a passive success counts as recent
UPLOADS = ("STOR", "STOU", "APPE")
LISTINGS = ("LIST", "NLST", "MLSD")


def direction_of(command: str) -> str:
    if command in UPLOADS:
        return "upload"
    if command in LISTINGS:
        return "listing"
    return "download"


class ServerEvents:
    def __init__(self, metrics: Metrics, hooks: Hooks, summary_interval: float = 60.0) -> None:
        self.metrics = metrics
        self.hooks = hooks
        self.summary_interval = summary_interval
        self.summary = RepeatSummary(summary_interval or 60.0)
        self._passive_ok: OrderedDict[str, tuple[int, float]] = OrderedDict()  # client -> (count, last time)
        self._summaries: asyncio.Task[None] | None = None

    # --- life ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.summary_interval > 0:
            self._summaries = asyncio.get_running_loop().create_task(self._summarise())

    async def stop(self, grace: float) -> None:
        if self._summaries is not None:
            self._summaries.cancel()
        self.flush_summary()
        await self.hooks.close(grace)

    async def _summarise(self) -> None:
        while True:
            await asyncio.sleep(self.summary_interval)
            self.flush_summary()

    def flush_summary(self) -> None:
        """Log the repeated problems of the window that ends now (one line each, bounded)."""
        for line in self.summary.lines():
            log.warning("diagnosis summary: %s", line, extra={"diagnosis_summary": line})

    # --- sessions and logins -------------------------------------------------------------------------------
    def connection_refused(self, reason: str) -> None:
        """A control connection turned away at once (``banned``, ``limit``)."""
        self.metrics.child(self.metrics.refused_connections, reason).inc()
        self.metrics.child(self.metrics.sessions, "banned" if reason == "banned" else "refused").inc()

    def session_closed(self, s: Session) -> str:
        """The session's result (a label): ``probe`` when it ended without a command (a load balancer's TCP
        health check: logged at debug level only), ``logged_in``, ``not_logged_in``."""
        if s.commands == 0:
            result = "probe"
        elif s.logged_in:
            result = "logged_in"
        else:
            result = "not_logged_in"
        self.metrics.child(self.metrics.sessions, result).inc()
        return result

    def login(self, s: Session, name: str, ok: bool, reason: str = "") -> None:
        """A login that worked (``reason``: anonymous, user) or failed (credentials, anonymous_disabled,
        tls_required)."""
        if ok:
            self.metrics.child(self.metrics.logins, "ok", reason or "user").inc()
            return
        if not reason:
            anonymous = s.shared.accounts.is_anonymous_name(name)
            reason = "anonymous_disabled" if anonymous and not s.shared.accounts.anonymous else "credentials"
        self.metrics.child(self.metrics.logins, "failed", reason).inc()
        if self.hooks.wanted("login-failed"):
            self.hooks.fire("login-failed", {**self._fields(s, "login-failed"), "user": name, "reason": reason})

    def tls_failed(self, connection: str, error: BaseException | str) -> None:
        reason = diagnose.tls_failure_reason(str(error) or type(error).__name__)
        self.metrics.child(self.metrics.tls_failures, connection, reason).inc()

    # --- the server's diagnosis ----------------------------------------------------------------------------
    def diagnosed(self, s: Session, d: Diagnosis, what: str = "") -> str:
        """Log, count and remember ``d``; its hint for the reply."""
        self.metrics.child(self.metrics.diagnoses, d.mode, d.code).inc()
        if d.failure:
            self.metrics.child(self.metrics.data_failures, d.mode, d.code).inc()
        self.summary.note(d)
        prefix = f"[{s.id}] {what}: " if what else f"[{s.id}] "
        log.log(logging.WARNING if d.failure else logging.INFO, "%s%s", prefix, d.log_text(),
                extra={"diagnosis": d.to_json()})
        return d.hint()

    def port_refused(self, s: Session, command: str, target: diagnose.HostPort, refusal: str) -> str:
        """PORT/EPRT refused (RFC 2577); the hint for the 501, or ``""`` (a port below 1024)."""
        d = diagnose.active_announcement(command, target, s.peer_ip, s.stream.encrypted)
        if d is None:
            log.warning("[%s] %s refused: %s", s.id, command.split(" ", 1)[0], refusal)
            self.metrics.child(self.metrics.data_failures, "active", "unclassified").inc()
            return ""
        return self.diagnosed(s, d, f"{command.split(' ', 1)[0]} refused")

    def passive_announced(self, s: Session, method: diagnose.DataMethod, announced: diagnose.HostPort) -> None:
        """A 227 with a private address to a public client: said once per session (the reply is not changed:
        clients parse it)."""
        d = diagnose.passive_announcement(method, announced, s.peer_ip)
        if d is not None and d.code not in s.warned:
            s.warned += (d.code,)
            self.diagnosed(s, d, method)

    def passive_failed(self, s: Session, method: str, exc: DataConnectionError) -> str:
        """No passive port could be announced."""
        if exc.kind != "exhausted":
            log.warning("[%s] %s: %s", s.id, method, exc)
            self.metrics.child(self.metrics.data_failures, "passive", "unclassified").inc()
            return ""
        self.metrics.child(self.metrics.passive_exhausted, "client" if "your address" in str(exc) else "range").inc()
        return self.diagnosed(s, diagnose.passive_exhausted(str(exc), s.peer_ip), method)

    def data_failed(self, s: Session, t: Transfer, exc: DataConnectionError) -> str:
        """The transfer's data connection did not open (425 follows); the hint for the reply."""
        channel = t.channel
        what = f"{t.command.verb} {t.path}: data connection failed: {exc}"
        d: Diagnosis | None
        if channel.mode == "active":
            d = diagnose.active_failure(exc.kind, channel.announced, s.cfg.data_connect_timeout, s.peer_ip, str(exc))
        elif exc.kind == "timeout" and isinstance(channel, PassiveListener):
            d = diagnose.passive_timeout(self._passive_facts(s, channel))
        else:
            d = None
        if d is None:
            log.warning("[%s] %s", s.id, what)
            self.metrics.child(self.metrics.data_failures, channel.mode, "unclassified").inc()
            return ""
        return self.diagnosed(s, d, what)

    def passive_expired(self, s: Session, listener: PassiveListener) -> None:
        """Nobody connected to an announced passive port in time, and no transfer command waited for it (a client
        that connects before it sends RETR gives up without one)."""
        d = diagnose.passive_timeout(self._passive_facts(s, listener))
        self.diagnosed(s, d, f"{listener.method} {listener.announced}: nobody connected")

    def _passive_facts(self, s: Session, listener: PassiveListener) -> PassiveFacts:
        return PassiveFacts(listener.announced, listener.method, s.cfg.data_accept_timeout, s.peer_ip, s.local_ip,
                            refused_sources=tuple(listener.refused),
                            client_passive_successes=self._passive_successes(s.peer_ip))

    def data_opened(self, s: Session, t: Transfer) -> None:
        channel = t.channel
        if channel.mode != "passive":
            return
        count, _ = self._passive_ok.pop(s.peer_ip, (0, 0.0))
        self._passive_ok[s.peer_ip] = (count + 1, time.monotonic())
        while len(self._passive_ok) > PASSIVE_MEMORY:
            self._passive_ok.popitem(last=False)
        refused = tuple(channel.refused) if isinstance(channel, PassiveListener) else ()
        if refused:
            source = refused[0].rsplit(":", 1)[0].strip("[]")
            self.diagnosed(s, diagnose.passive_foreign_source(channel.announced.port, source, s.peer_ip),
                           f"{t.command.verb} {t.path}")

    def _passive_successes(self, client: str) -> int:
        count, when = self._passive_ok.get(client, (0, 0.0))
        return count if time.monotonic() - when < PASSIVE_RECENT else 0

    def data_tls_refused(self, s: Session, t: Transfer, refusal: str, handshake_failed: bool) -> str:
        """A protected data connection refused (522); the hint for the reply."""
        if handshake_failed:
            self.tls_failed("data", refusal)
        d = diagnose.data_tls_refused(refusal, t.channel.mode, s.peer_ip)
        what = f"{t.command.verb} {t.path}: protected data connection refused: {refusal}"
        if d is None:
            log.warning("[%s] %s", s.id, what)
            self.metrics.child(self.metrics.data_failures, t.channel.mode, "unclassified").inc()
            return ""
        return self.diagnosed(s, d, what)

    # --- transfers and files -------------------------------------------------------------------------------
    def transfer_done(self, s: Session, rec: TransferRecord) -> None:
        direction = direction_of(rec.command)
        result = "ok" if rec.complete else ("aborted" if rec.error == "aborted" else "failed")
        m = self.metrics
        m.child(m.transfers, direction, rec.mode, result).inc()
        if rec.bytes:
            m.child(m.transfer_bytes, direction).inc(rec.bytes)
        if rec.complete:
            m.child(m.duration, direction).observe(max(rec.seconds, 0.0))
        if not rec.complete or direction == "listing":
            return
        event = "upload" if direction == "upload" else "download"
        if self.hooks.wanted(event):
            self.hooks.fire(event, {**self._fields(s, event, rec.path), "size": str(rec.bytes), "mode": rec.mode,
                                    "method": rec.method, "seconds": f"{rec.seconds:.6f}"})

    def file_changed(self, s: Session, event: str, path: str, source: str | None = None) -> None:
        """``delete``, ``rename`` (``source`` -> ``path``), ``mkdir``, ``rmdir``: done."""
        if self.hooks.wanted(event):
            fields = self._fields(s, event, path)
            if source is not None:
                fields["from"] = source
            self.hooks.fire(event, fields)

    async def pre_upload(self, s: Session, path: str) -> tuple[int, str] | None:
        """The pre-upload hooks' verdict: ``None`` to go on, or the reply that refuses the upload (550 with the
        hook's reason, 451 when the check did not answer)."""
        if not self.hooks.wanted("pre-upload"):
            return None
        fields = self._fields(s, "pre-upload", path)
        if s.data is not None:
            fields["mode"], fields["method"] = s.data.mode, s.data.method
        try:
            reason = await self.hooks.check(fields)
        except TimeoutError as exc:
            log.warning("[%s] upload of %s not started: its check did not answer: %s", s.id, path, exc)
            return 451, "Upload check unavailable; try again later"
        if reason is None:
            return None
        log.info("[%s] upload of %s refused by a pre-upload hook: %s", s.id, path, reason)
        return 550, f"Upload refused: {reason}"

    def _fields(self, s: Session, event: str, path: str | None = None) -> dict[str, str]:
        fields = {"event": event, "user": s.user, "anonymous": "true" if s.account and s.account.anonymous else
                  "false", "client_ip": s.peer_ip, "session": s.id,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if path is not None:
            fields["path"] = path
            local = s.local_path(path)
            if local is not None:
                fields["local_path"] = local
        return fields

    def hook_done(self, event: str, result: str, seconds: float) -> None:
        self.metrics.child(self.metrics.hooks, event, result).inc()
        if result != "dropped":
            self.metrics.child(self.metrics.hook_duration, event).observe(seconds)


def default_events() -> ServerEvents:
    """Counting into a registry of its own, no hooks (a server built without :class:`FTPServer`)."""
    return ServerEvents(Metrics(), Hooks((), 1), summary_interval=0)
