"""One control connection: reads commands, checks the command table's preconditions, calls handlers, and keeps
replies in order through the protocol core's :class:`ServerConversation`. One task per session; a transfer runs in
a task of its own so ABOR and STAT can be answered while it moves data.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from ftpkit.protocol.commands import Command, CommandEvent
from ftpkit.protocol.conversation import Phase, ServerConversation, bad_line_text
from ftpkit.protocol.errors import StateError
from ftpkit.protocol.hostport import HostPort, plain_ip
from ftpkit.protocol.listing import MLST_FACTS
from ftpkit.protocol.replies import Reply, printable
from ftpkit.server.accounts import Account, Accounts
from ftpkit.server.commands import COMMANDS
from ftpkit.server.commands.integrity import HashState
from ftpkit.server.config import ServerConfig
from ftpkit.server.control import ControlConnection, ServerControlStream
from ftpkit.server.data import DataChannel, DataStream, PortPool, Transfer
from ftpkit.server.deadlines import Deadline, Deadlines
from ftpkit.server.defender import Defender
from ftpkit.server.events import ServerEvents, default_events
from ftpkit.server.proxied import Admission, stray_header
from ftpkit.server.splice import SpliceStream
from ftpkit.server.storage import LocalStorage, Storage, StorageError, join_virtual
from ftpkit.server.xferlog import TransferLog
from ftpkit.tls import TLSError

log = logging.getLogger("ftpkit.server")
MAX_PIPELINED = 64
"""Commands received and not yet answered beyond which the control connection is not read."""
_ids = itertools.count(1)

StorageFactory = Callable[[Path, Executor], Storage]
"""Makes the storage of one session from the account's home and the server's worker threads."""

_RECANCEL_AFTER = 0.05  # seconds: how often an aborted transfer is checked for still moving data


@dataclass
class Shared:
    """What all sessions of one server share; built once at start-up."""

    cfg: ServerConfig
    accounts: Accounts
    pool: PortPool
    executor: Executor
    transfer_log: TransferLog
    defender: Defender
    active_source_port: int | None = None  # 20 when active_from_port_20 is in force
    storage_factory: StorageFactory = LocalStorage
    tls_context: ssl.SSLContext | None = None
    sessions: set[Session] = field(default_factory=set)  # from the accept to the end of the session
    per_ip: Counter[str] = field(default_factory=Counter)  # sessions per client address
    prelogin: Counter[str] = field(default_factory=Counter)  # sessions not logged in, per client address
    stopping: bool = False  # set at shutdown: sessions close (421) as soon as no transfer runs
    digest_slots: asyncio.Semaphore | None = None  # HASH and X digests at once, server-wide (made at first use)
    events: ServerEvents = field(default_factory=default_events)  # diagnosis, metrics, hooks
    deadlines: Deadlines = field(default_factory=Deadlines)  # login, idle and passive-accept timeouts: one loop timer


def _urgent_data_in_line(conn: ControlConnection) -> None:
    """Keep TCP urgent data in the byte stream (SO_OOBINLINE, as vsftpd does): the Synch of an abort (RFC 959
    §4.1.3) then arrives exactly as the client sent it, and the command reader drops its Telnet bytes."""
    sock = conn.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)


class Session:
    # Slots, not a __dict__ (1.6 kB per session by tracemalloc): idle sessions are held by the thousand.
    __slots__ = (
        "_crashed", "_deadline", "_hashing", "_loop", "_prelogin", "_timed_out", "_timer", "_wakeup", "_watched",
        "account", "admission", "ascii", "cfg", "commands", "conv", "cwd", "data", "epsv_all", "failures", "id",
        "implicit_tls", "last_port_command", "local_ip", "local_port", "logged_in", "login_deadline", "mlst_facts",
        "pbsz", "peer_ip", "peer_port", "pending_user", "previous_verb", "prot_private", "rename_from", "rest",
        "shared", "started", "storage", "stream", "transfer", "transfers", "warned",
    )

    def __init__(self, shared: Shared, conn: ControlConnection, implicit_tls: bool = False,
                 admission: Admission | None = None) -> None:
        self.shared = shared
        self.cfg = shared.cfg
        self.admission = admission  # what a PROXY protocol header said (server/proxied.py)
        self.stream = ServerControlStream(conn, admission.early if admission else b"")
        _urgent_data_in_line(conn)
        self.implicit_tls = implicit_tls
        self.id = f"s{next(_ids)}"
        peer = (admission.client if admission else None) or conn.get_extra_info("peername")
        local = conn.get_extra_info("sockname")
        self.peer_ip, self.peer_port = plain_ip(peer[0]), peer[1]
        self.local_ip, self.local_port = plain_ip(local[0]), local[1]
        self.conv = ServerConversation(self.cfg.max_line)
        self.started = time.monotonic()
        self.failures = 0
        self.commands = 0  # command lines received (none: a TCP health probe)
        self.logged_in = False  # ever, in this session
        self.warned: tuple[str, ...] = ()  # diagnosis warnings said once per session (a set would cost 216 B)
        self.last_port_command: str | None = None  # for SITE LASTPORT (ftpkit doctor's NAT-helper check)
        self.transfer: Transfer | None = None
        self.transfers = 0
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None  # what the control loop awaits (see _arm_wait)
        self._deadline: float | None = None  # when the control loop's wait ends without input (loop time)
        self._timer: Deadline | None = None  # one per session, re-armed only when it fires early
        self._timed_out = False
        self._watched: Transfer | None = None  # the transfer whose task the session watches for a crash
        self._crashed: tuple[Transfer, ...] = ()  # transfers whose task ended with an unexpected exception
        self.data: DataChannel | None = None
        self._prelogin = False
        self.reinitialize()
        shared.sessions.add(self)  # counted from now on: the limits of the next accept see this session
        shared.per_ip[self.peer_ip] += 1

    def reinitialize(self) -> None:
        """The state a new session starts with (and REIN returns to): logged out, TYPE A, no data connection."""
        self.set_data(None)
        self.set_prelogin(True)
        # login
        self.login_deadline = time.monotonic() + self.cfg.login_timeout
        self.pending_user: str | None = None
        self.account: Account | None = None
        self.storage: Storage | None = None
        # command state
        self.cwd = "/"
        self.ascii = True  # TYPE A is the RFC 959 default
        self.rest = 0
        self.rename_from: str | None = None
        self.previous_verb = ""
        self.epsv_all = False
        self.mlst_facts: tuple[str, ...] = MLST_FACTS  # chosen by OPTS MLST (RFC 3659 7.9)
        self._hashing: HashState | None = None  # OPTS HASH and RANG (REIN starts them again); made at first use
        # FTPS (RFC 4217): the control connection's TLS stays, the data protection starts again
        self.pbsz = False
        self.prot_private = False

    @property
    def hashing(self) -> HashState:
        """The session's choices for HASH (OPTS HASH, RANG)."""
        if self._hashing is None:
            self._hashing = HashState()
        return self._hashing

    # --- replies -------------------------------------------------------------------------------------------
    @property
    def is_ipv6(self) -> bool:
        return ":" in self.peer_ip

    @property
    def user(self) -> str:
        if self.account is not None:
            return self.account.name
        return "-"

    async def reply(self, code: int, text: str | list[str], to: CommandEvent | None = None) -> None:
        """Send a reply; ``text`` may echo what the client sent (CR, LF and NUL go out as visible escapes).
        A string is split into lines at LF, as :meth:`Reply.of` does."""
        lines = text.split("\n") if isinstance(text, str) else text
        self._send(self.conv.reply(Reply.of(code, [printable(line) for line in lines]), to))
        await self._drain()

    async def _drain(self) -> None:
        """Wait until the client takes our replies; one that stops reading them is let go after idle_timeout."""
        if not self.stream.write_pending():
            return  # the kernel took the reply at once (nearly always): no timer, no task
        try:
            async with asyncio.timeout(self.cfg.idle_timeout):
                await self.stream.drain()
        except TimeoutError:
            raise ConnectionAbortedError(f"the client read no reply for {self.cfg.idle_timeout:g} s") from None

    def _send(self, data: bytes) -> None:
        if log.isEnabledFor(logging.DEBUG):
            for line in data.decode("utf-8", "replace").splitlines():
                log.debug("[%s] <-- %s", self.id, line)
        self.stream.write(data)

    def vpath(self, path: str | None) -> str:
        return join_virtual(self.cwd, path or "")

    def set_data(self, channel: DataChannel | None) -> None:
        """Announce a new data connection, closing any earlier one not used yet."""
        if self.data is not None:
            self.data.close()
        self.data = channel

    def masquerade_for_peer(self) -> str:
        """The address to announce in 227 for this client (never 0.0.0.0)."""
        if not self.cfg.masquerade_map:
            return self.cfg.masquerade_address or self.local_ip
        peer = ipaddress.ip_address(self.peer_ip)
        for network, address in self.cfg.masquerade_map:
            if peer.version == network.version and peer in network:
                return address
        return self.cfg.masquerade_address or self.local_ip

    def active_refusal(self, target: HostPort) -> str | None:
        """Why a PORT/EPRT target is refused (RFC 2577), or ``None``."""
        if target.port < 1024:
            return f"port {target.port} is below 1024"
        if not self.cfg.allow_foreign_addresses and plain_ip(target.host) != self.peer_ip:
            return f"{target.host} is not the address of your control connection ({self.peer_ip})"
        return None

    def tls_required(self) -> bool:
        """Whether this session must use TLS (control before USER, data with PROT P)."""
        if self.cfg.tls not in ("required", "implicit"):
            return False
        anonymous = self.account.anonymous if self.account else (
            self.pending_user is not None and self.shared.accounts.is_anonymous_name(self.pending_user))
        return not anonymous or self.cfg.tls_required_for_anonymous

    def data_must_be_protected(self) -> bool:
        return self.tls_required() and not self.prot_private

    def session_reuse_refusal(self, data_tls: ssl.SSLObject | None) -> str | None:
        """Why a protected data connection is refused under ``require_session_reuse``, or ``None``."""
        if not self.cfg.require_session_reuse or data_tls is None:
            return None
        if not data_tls.session_reused:
            return "it did not resume the control connection's TLS session"
        control = self.stream.tls
        if control is not None and data_tls.version() == "TLSv1.2" and control.session is not None \
                and data_tls.session is not None and control.session.id != data_tls.session.id:
            return "it resumed another TLS session than the control connection's"
        return None

    def local_path(self, vpath: str) -> str | None:
        """The file's path on this machine (for event hooks), when the storage is the local file system."""
        if not isinstance(self.storage, LocalStorage):
            return None
        try:
            return self.storage.real(vpath)
        except StorageError:
            return None

    def active_source(self) -> tuple[str, int] | None:
        port = self.shared.active_source_port
        return (self.local_ip, port) if port is not None else None

    # --- the control loop ----------------------------------------------------------------------------------
    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task that runs this session (what a shutdown waits for)."""
        return self.stream.conn.task

    async def run(self) -> None:
        """The session, from the greeting to the close of the control connection; what its task runs."""
        health = bool(self.admission and self.admission.health_check)  # a balancer's check: not worth a line
        level = logging.DEBUG if health else logging.INFO
        via = f" via {self.admission.proxy}" if self.admission and self.admission.proxy else ""
        log.debug("[%s] connect from %s:%d%s", self.id, self.peer_ip, self.peer_port, via)
        first = True
        try:
            if self.implicit_tls:
                assert self.shared.tls_context is not None
                try:
                    await self.stream.start_tls(self.shared.tls_context, server_side=True,
                                                timeout=self.cfg.tls_handshake_timeout)
                except BaseException as exc:
                    self.shared.defender.record(self.peer_ip, "tls_failed")
                    self.shared.events.tls_failed("control", exc)
                    raise
            self._send(self.conv.greet(Reply.of(220, self.cfg.banner)))
            await self.stream.drain()
            while self.conv.phase is Phase.READY:
                if self._crashed:
                    crashed, self._crashed = self._crashed[0], self._crashed[1:]
                    await self._answer_crashed_transfer(crashed)
                    continue
                if self.shared.stopping and self.transfer is None:
                    self._send(self.conv.notice(Reply.of(421, "Server shutting down.")))
                    await self.stream.drain()
                    break
                event = self.conv.next_event()
                if event is not None:
                    await self.dispatch(event)
                    continue
                # A client that pipelines more than MAX_PIPELINED while a transfer runs is not read from until the
                # commands are answered: its flood stays in the kernel's buffers, not in our memory.
                reading = self.conv.waiting < MAX_PIPELINED
                if reading:
                    data = self.stream.read_nowait()
                    if data is not None:
                        if not data:
                            break
                        if first and (stray := stray_header(self.cfg, self.admission, self.peer_ip, data)):
                            log.warning("[%s] %s", self.id, stray)
                            self._send(self.conv.notice(Reply.of(421, "PROXY protocol header not accepted here.")))
                            await self.stream.drain()
                            break
                        first = False
                        self.conv.receive_data(data)
                        continue
                running = self.transfer.task if self.transfer is not None else None
                timeout = None if self.transfer is not None else self.cfg.idle_timeout
                if self.account is None:  # trickled bytes cannot extend the time to log in (slowloris)
                    left = max(0.0, self.login_deadline - time.monotonic())
                    timeout = left if timeout is None else min(timeout, left)
                wakeup = self._arm_wait(running, timeout, reading)
                try:
                    await wakeup
                finally:
                    woken = self._disarm_wait(running, reading)
                if not woken:
                    if self.account is None and time.monotonic() >= self.login_deadline:
                        log.info("[%s] no login from %s within %g s: closing", self.id, self.peer_ip,
                                 self.cfg.login_timeout)
                        text = f"No login within {self.cfg.login_timeout:g} s: closing control connection."
                    else:
                        log.info("[%s] idle for %g s: closing", self.id, self.cfg.idle_timeout)
                        text = "Timeout: closing control connection."
                    self._send(self.conv.notice(Reply.of(421, text)))
                    await self._drain()
                    break
        except TLSError as exc:
            log.warning("[%s] TLS on the control connection from %s failed: %s", self.id, self.peer_ip, exc)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            # a TCP health probe that closes with our greeting unread resets the connection: not worth a line
            log.log(level if self.commands else logging.DEBUG, "[%s] control connection lost: %s", self.id, exc)
        except Exception as exc:
            log.error("[%s] internal error in the control loop: %s", self.id, exc, exc_info=exc)
            await self._close_with_421("Internal error: closing control connection.")
        finally:
            try:
                await self._close()
            except Exception as exc:  # logged; the session is still forgotten below, its counts go down
                log.error("[%s] internal error closing the session: %s", self.id, exc, exc_info=exc)
            self._forget(level)

    async def _close(self) -> None:
        """Stop the transfer and the data connection, close the control connection once its replies are out."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.abort_transfer()
        self.set_data(None)
        self.stream.close()
        if not self.stream.conn.lost:  # replies still on their way out (nearly always gone already)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.stream.wait_closed()
            # a client that reads no reply would hold the socket (and our buffer) as long as it acks the
            # kernel's zero-window probes, which is forever: it gets two seconds, then the socket is closed
            self.stream.conn.abort()

    def _forget(self, level: int) -> None:
        """The session is over: out of the server's counts, into the metrics, and a line in the log."""
        self.shared.sessions.discard(self)
        per_ip = self.shared.per_ip
        per_ip[self.peer_ip] -= 1
        if per_ip[self.peer_ip] <= 0:
            del per_ip[self.peer_ip]
        self.set_prelogin(False)
        probe = self.shared.events.session_closed(self) == "probe"  # a TCP health check: not worth a line
        log.log(logging.DEBUG if probe else level, "[%s] end of session %s@%s after %.1f s, %d commands, "
                "%d transfers", self.id, self.user, self.peer_ip, time.monotonic() - self.started, self.commands,
                self.transfers)

    def _arm_wait(self, running: asyncio.Future | None, timeout: float | None, reading: bool
                  ) -> asyncio.Future[None]:
        """The future the control loop awaits until the transfer task ``running`` is done, input arrives on the
        control connection (when ``reading``) or :meth:`wake` is called, or ``timeout`` passes: what asyncio.wait
        does with one future per wait and no read task, no timer and no coroutine of its own (the session's one
        timer is re-armed only when it fires before the deadline, so a command costs a float, not a timer handle).
        :meth:`_disarm_wait` undoes it once the future is done or the wait is cancelled."""
        wakeup = self._wakeup = self._loop.create_future()
        self._timed_out = False
        if reading:
            self.stream.wake_on_input(wakeup)
        if running is not None:
            running.add_done_callback(self._wake_by)
        self._set_deadline(None if timeout is None else self._loop.time() + timeout)
        return wakeup

    def _disarm_wait(self, running: asyncio.Future | None, reading: bool) -> bool:
        """End the wait of :meth:`_arm_wait`: ``False`` when only its timeout ended it."""
        self._deadline = None
        self._wakeup = None
        if reading:
            self.stream.wake_on_input(None)
        if running is None:
            return not self._timed_out
        running.remove_done_callback(self._wake_by)
        return not self._timed_out or running.done()

    def _set_deadline(self, deadline: float | None) -> None:
        self._deadline = deadline
        if deadline is None or (self._timer is not None and self._timer.when <= deadline):
            return  # the timer fires no later than the deadline and looks at it then
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.shared.deadlines.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # no wait with a deadline now: the next one arms the timer again
        if self._loop.time() < deadline:
            self._timer = self.shared.deadlines.call_at(deadline, self._on_timer)
            return
        if self._wakeup is not None and not self._wakeup.done():  # not when input came in the same turn
            self._timed_out = True
            self._wakeup.set_result(None)

    def _wake_by(self, _: object) -> None:
        self.wake()

    def wake(self) -> None:
        """Make the control loop look at the server's state now (used at shutdown)."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def dispatch(self, event: CommandEvent) -> None:
        self.commands += 1
        if not isinstance(event, Command):
            log.info("[%s] bad command line: %s", self.id, bad_line_text(event))
            self.shared.defender.record(self.peer_ip, "protocol_error")
            await self.reply(500, bad_line_text(event))
            return
        if log.isEnabledFor(logging.DEBUG):  # masking costs a little: only when the conversation is logged
            log.debug("[%s] --> %s", self.id, event.masked())
        spec = COMMANDS.get(event.verb)
        previous, self.previous_verb = self.previous_verb, event.verb
        if (event.verb != "RNTO" or previous != "RNFR") and event.verb != "RNFR":
            self.rename_from = None
        if spec is None:
            await self.reply(502, f"Command not implemented: {event.verb[:8]}.")
            return
        if spec.login and self.account is None:
            await self.reply(530, "Please log in with USER and PASS.")
            return
        if spec.arg == "required" and not event.arg:
            await self.reply(501, f"{event.verb} needs an argument: {spec.syntax}.")
            return
        if spec.arg == "none" and event.arg:
            await self.reply(501, f"{event.verb} takes no argument.")
            return
        if spec.write and not (self.account and self.account.write):
            await self.reply(550, "Permission denied: this account is read-only.")
            return
        try:
            await spec.handler(self, event)
        except (ConnectionError, asyncio.IncompleteReadError):
            raise  # the control connection is gone (a failed TLS handshake too): the session ends
        except Exception as exc:
            await self._handler_failed(event, exc)
        self._watch_transfer()

    async def _handler_failed(self, cmd: Command, exc: Exception) -> None:
        """A handler's unexpected exception: logged once with its traceback; the command gets 451 and the
        session goes on, or, when the conversation itself is out of step, 421 and the session ends."""
        log.error("[%s] internal error handling %s: %s", self.id, cmd.masked()[:80], exc, exc_info=exc)
        if isinstance(exc, StateError) or self.conv.phase is not Phase.READY:
            await self._close_with_421("Internal error: closing control connection.")
        elif self.conv.awaits_reply(cmd):
            await self._internal_error_reply(cmd)

    async def _internal_error_reply(self, cmd: Command) -> None:
        try:
            self._send(self.conv.reply(Reply.of(451, f"Local error in processing {cmd.verb}; the error is logged."),
                                       cmd))
        except StateError:
            await self._close_with_421("Internal error: closing control connection.")
            return
        await self.stream.drain()

    async def _close_with_421(self, text: str) -> None:
        """Say 421 (if the conversation still may) and end the session: the control loop stops."""
        if self.conv.phase is Phase.READY:
            self._send(self.conv.notice(Reply.of(421, text)))
            with contextlib.suppress(ConnectionError, OSError):
                await self.stream.drain()

    def _watch_transfer(self) -> None:
        """Watch a transfer task a handler started: an unexpected exception in it must still get a reply."""
        transfer = self.transfer
        if transfer is None or transfer is self._watched or transfer.task is None:
            return
        self._watched = transfer
        transfer.task.add_done_callback(lambda task: self._transfer_done(transfer, task))

    def _transfer_done(self, transfer: Transfer, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("[%s] internal error in the %s transfer of %s: %s", self.id, transfer.command.verb, transfer.path,
                  exc, exc_info=exc)
        self._crashed += (transfer,)
        self.wake()

    async def _answer_crashed_transfer(self, transfer: Transfer) -> None:
        if self.transfer is transfer:
            self.transfer = None
        if self.conv.awaits_reply(transfer.command):
            await self._internal_error_reply(transfer.command)

    def set_prelogin(self, on: bool) -> None:
        """Count this session among its address's sessions not logged in (``max_prelogin_per_ip``), or not."""
        if on == self._prelogin:
            return
        self._prelogin = on
        counter = self.shared.prelogin
        counter[self.peer_ip] += 1 if on else -1
        if counter[self.peer_ip] <= 0:
            del counter[self.peer_ip]

    async def finish_or_abort_transfer(self) -> None:
        """For QUIT during a transfer: let an upload whose data has ended complete; abort anything else (426)."""
        transfer = self.transfer
        if transfer is None or transfer.task is None or transfer.task.done():
            return
        stream = transfer.stream
        if transfer.direction == "i" and isinstance(stream, (DataStream, SpliceStream)) and stream.eof:
            await asyncio.wait([transfer.task])  # all its bytes arrived: commit and 226 come by themselves
            return
        await self.abort_transfer()
        if self.conv.transfer is transfer.command:
            await self.reply(426, "Connection closed; transfer aborted.", to=transfer.command)
        self.transfer = None

    async def abort_transfer(self) -> bool:
        """Stop the transfer in progress, if any; ``True`` if one was stopped."""
        transfer = self.transfer
        if transfer is None or transfer.task is None or transfer.task.done():
            return False
        # asyncio.wait_for before Python 3.12 swallows a cancellation that arrives just as the call it awaits
        # completes (CPython gh-86296): a transfer that awaits one chunk after another would then go on to its end.
        # So while the transfer still moves data after its cancellation, cancel it again (never while it only
        # cleans up: that would interrupt the close of its file).
        transfer.task.cancel()
        while True:
            moved = transfer.bytes
            done, _ = await asyncio.wait([transfer.task], timeout=_RECANCEL_AFTER)
            if done:
                return True
            if transfer.bytes != moved:
                transfer.task.cancel()
