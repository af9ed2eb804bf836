"""The doctor's steps, in order, as probes on the network. Each fills a :class:`Check` and the :class:`Facts`.

Every step is bounded by the timeout; the doctor contacts only the target and the addresses it announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from ftpkit.client.control import Control
from ftpkit.client.data import receive, wrap_tls
from ftpkit.client.errors import ControlConnectionError
from ftpkit.client.net import ConnectFailed, connect
from ftpkit.client.options import ClientOptions
from ftpkit.doctor.model import ActiveProbe, Check, Facts, Outcome, PassiveProbe
from ftpkit.protocol.errors import HostPortError
from ftpkit.protocol.hostport import (
    HostPort,
    classify_announced,
    explain_port,
    format_eprt,
    format_port,
    parse_epsv,
    parse_pasv,
    plain_ip,
)
from ftpkit.protocol.replies import Reply


@contextlib.asynccontextmanager
async def timed(check: Check) -> AsyncIterator[Check]:
    started = time.monotonic()
    try:
        yield check
    finally:
        check.seconds = time.monotonic() - started


async def tcp_connect(host: str, port: int, timeout: float) -> tuple[Outcome, socket.socket | None, str]:
    """Connect as the client does, telling a refusal (RST) from a silent drop (timeout): (outcome, socket, detail)."""
    try:
        return "ok", await connect(host, port, timeout), "connected"
    except ConnectFailed as exc:
        return exc.outcome, None, exc.detail


def reply_text(reply: Reply) -> str:
    return f"{reply.code} {reply.lines[-1] if len(reply.lines) > 1 else reply.text}"


class Session:
    """A control connection for the probes, recording the sequence of each check."""

    def __init__(self, facts: Facts, options: ClientOptions) -> None:
        self.facts = facts
        self.check: Check | None = None
        self.options = replace(options, transcript=self._record)
        self.control = Control(self.options)
        self.protected = False  # PROT P: data connections use TLS, resuming the control session

    def _record(self, direction: str, text: str) -> None:
        if self.check is not None and direction in ("-->", "<--"):
            self.check.sequence.append(f"{direction} {text}")

    async def command(self, verb: str, arg: str | None = None) -> Reply:
        return await self.control.command(verb, arg)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.control.close()


async def list_over(session: Session, sock: socket.socket, check: Check) -> tuple[bool, str]:
    """Send LIST over an open data connection; (worked, final reply)."""
    await session.control.send_command("LIST")
    first = await session.control.read_reply()
    if not first.is_preliminary:
        sock.close()
        return False, reply_text(first)
    received = await _drain(await _protect(session, sock), session.options.timeout)
    final = await session.control.read_reply()
    check.sequence.append(f"=== {received} bytes")
    return final.is_success, reply_text(final)


async def _protect(session: Session, sock: socket.socket) -> socket.socket:
    """TLS on a data connection after its 1xx reply when PROT P is in force (resuming the control session)."""
    if not session.protected:
        return sock
    control = session.control
    return await asyncio.to_thread(wrap_tls, sock, control.tls_context(), control.host, control.tls_session(),
                                   session.options.timeout)


async def _drain(sock: socket.socket, timeout: float) -> int:
    if isinstance(sock, ssl.SSLSocket):
        return await asyncio.to_thread(receive, sock, lambda _: None, False, None, timeout)
    loop = asyncio.get_running_loop()
    total = 0
    try:
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
            if not data:
                break
            total += len(data)
    finally:
        sock.close()
    return total


async def probe_passive(session: Session, method: str, check: Check) -> PassiveProbe:
    facts = session.facts
    probe = PassiveProbe(method)
    reply = await session.command(method)
    probe.reply, probe.code = reply_text(reply), reply.code
    try:
        if method == "EPSV" and reply.code == 229:
            probe.announced = HostPort(facts.peer, parse_epsv(reply.text))
        elif method == "PASV" and reply.code == 227:
            probe.announced = parse_pasv(reply.text)
    except HostPortError as exc:
        probe.reply += f" (unreadable: {exc})"
    if probe.announced is None:
        check.say("fail", "passive-refused", method=method, reply=probe.reply)
        return probe
    hp = probe.announced
    probe.classification = classify_announced(hp.host, facts.peer)
    computation = explain_port(hp.port)
    check.sequence.append(f"=== announced {hp} ({computation}) [{probe.classification}]")
    outcome, sock, _ = await tcp_connect(hp.host, hp.port, facts.timeout)
    probe.direct = outcome
    check.sequence.append(f"=== connect {hp} -> {outcome}")
    if sock is None and probe.classification != "same":
        outcome, sock, _ = await tcp_connect(facts.peer, hp.port, facts.timeout)
        probe.substituted = outcome
        check.sequence.append(f"=== connect {facts.peer}:{hp.port} -> {outcome}")
    if sock is None:
        # the server still holds the announced listener; the next PASV/EPSV replaces it
        check.say("fail", "passive-nodata", announced=hp, computation=computation, outcome=outcome)
        return probe
    probe.list_ok, probe.list_reply = await list_over(session, sock, check)
    if probe.list_ok and probe.direct == "ok":
        check.say("pass", "passive-ok", announced=hp, computation=computation, reply=probe.list_reply)
    elif probe.list_ok:
        check.say("warn", "passive-substituted", announced=hp, computation=computation, peer=facts.peer,
                  reply=probe.list_reply)
    else:
        check.say("fail", "list-failed", reply=probe.list_reply)
    return probe


async def probe_active(session: Session, method: str, check: Check, active_address: str | None) -> ActiveProbe:
    facts = session.facts
    probe = ActiveProbe(method)
    family = socket.AF_INET6 if ":" in facts.local else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((facts.local, 0))
    listener.listen(1)
    listener.setblocking(False)
    try:
        port = listener.getsockname()[1]
        probe.announced = HostPort(plain_ip(active_address or facts.local), port)
        arg = format_eprt(probe.announced) if method == "EPRT" else format_port(probe.announced)
        probe.sent = f"{method} {arg}"
        check.sequence.append(f"=== listen {facts.local}:{port}; announce {probe.announced} ({explain_port(port)})")
        try:
            reply = await session.command(method, arg)
        except ControlConnectionError:
            # Some servers (pyftpdlib) connect back before they answer PORT: no answer in time is a data
            # connection the server could not open, and the session is out of step.
            probe.reply = f"no reply within {facts.timeout:g} s"
            probe.waited = facts.timeout
            check.sequence.append(f"=== {method}: {probe.reply}")
            check.say("fail", "active-no-connect", announced=probe.announced, computation=explain_port(port),
                      seconds=f"{facts.timeout:g}")
            raise SessionSpoiled(probe) from None
        probe.reply, probe.code = reply_text(reply), reply.code
        if facts.probe_offered:
            seen = await session.command("SITE", "LASTPORT")
            if seen.code == 200:
                probe.server_received = seen.text.strip()
        if reply.code != 200:
            check.say("fail", "active-refused", command=probe.sent, reply=probe.reply)
            return probe
        await session.control.send_command("LIST")
        loop = asyncio.get_running_loop()
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        first_reply = asyncio.ensure_future(session.control.read_reply(timeout=facts.timeout))
        started = time.monotonic()
        done, _ = await asyncio.wait({accept, first_reply}, timeout=facts.timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if accept not in done and first_reply in done and first_reply.exception() is None \
                and first_reply.result().is_preliminary:
            done, _ = await asyncio.wait({accept}, timeout=max(0.0, facts.timeout - (time.monotonic() - started)))
        probe.waited = round(time.monotonic() - started, 3)
        if accept not in done:
            accept.cancel()
            listener.close()
            answered = first_reply.done() and first_reply.exception() is None
            if answered:
                probe.list_reply = reply_text(first_reply.result())
            else:
                first_reply.cancel()
            check.sequence.append(f"=== accept {probe.announced} -> timeout ({probe.waited:g} s)")
            check.say("fail", "active-no-connect", announced=probe.announced, computation=explain_port(port),
                      seconds=f"{probe.waited:g}")
            if answered and not first_reply.result().is_preliminary:
                return probe  # the server gave up and said so (425): the session is still in step
            raise SessionSpoiled(probe)
        conn, addr = accept.result()
        probe.connected_from = (plain_ip(addr[0]), addr[1])
        check.sequence.append(f"=== accept {probe.connected_from[0]}:{addr[1]} -> {probe.announced}")
        first = await first_reply
        if not first.is_preliminary:
            conn.close()
            probe.list_reply = reply_text(first)
        else:
            received = await _drain(await _protect(session, conn), facts.timeout)
            final = await session.control.read_reply()
            check.sequence.append(f"=== {received} bytes")
            probe.list_reply = reply_text(final)
            probe.list_ok = final.is_success
        source = f"{probe.connected_from[0]}:{probe.connected_from[1]}"
        if probe.list_ok:
            check.say("pass", "active-ok", announced=probe.announced, computation=explain_port(port), source=source,
                      reply=probe.list_reply)
        else:
            check.say("fail", "list-failed", reply=probe.list_reply)
        return probe
    finally:
        listener.close()


class SessionSpoiled(ControlConnectionError):
    """A probe left the control connection waiting for a reply that may never come: start a new session."""

    def __init__(self, probe: ActiveProbe) -> None:
        super().__init__(f"{probe.method}: no data connection; the session is spoiled")
        self.probe = probe
