"""From the facts of a session to :class:`~ftpkit.diagnosis.Finding` objects; all their prose is in the catalogs.

Params are language-neutral facts (addresses, commands, replies, numbers); evidence lines are what the capture
shows, verbatim.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ftpkit.capture.model import DataConn, Endpoint, LogEntry, Session, Transfer
from ftpkit.diagnosis import Finding
from ftpkit.protocol.conversation import TRANSFER_COMMANDS

DATA_FAILURES = frozenset({425, 426, 451})
ANNOUNCE_FAILURES = frozenset({421, 425, 426})  # pyftpdlib answers PORT only after it tried to connect
MAX_EVIDENCE = 8


def same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def is_global(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_global
    except ValueError:
        return False


def syn_line(conn: DataConn) -> str:
    """``198.19.1.2:20 > 198.18.1.2:40001 [S] x4, no SYN-ACK`` in tcpdump's words."""
    answer = "SYN-ACK" if conn.synack else ("RST" if conn.rst_by == "responder" else "no SYN-ACK")
    return f"{conn.initiator} > {conn.responder} [S] x{conn.syns}, {answer}"


def announcement(t: Transfer) -> str:
    text = t.announce_text or ""
    return f"{text}   ({t.computation})" if t.computation else text


def transfer_findings(s: Session, t: Transfer) -> list[Finding]:
    out: list[Finding] = []
    announced = t.announced
    evidence = tuple(e for e in (announcement(t), _reply(t.announce_reply)) if e)
    if announced is not None and t.active and not same_ip(announced.ip, s.client.ip):
        params = {"command": t.announce_text or "", "announced": str(announced), "client": s.client.ip}
        if not is_global(announced.ip):
            out.append(Finding("port-address-mismatch", "fail", params, evidence))
        elif is_global(s.client.ip):
            out.append(Finding("port-bounce-attempt", "fail", params, evidence))
    if announced is not None and t.method == "PASV" and not same_ip(announced.ip, s.server.ip):
        out.append(Finding("pasv-address-mismatch", "warn", {"announced": str(announced), "server": s.server.ip},
                           evidence))
    out += _data_findings(t, evidence)
    failed = _failed_reply(t)
    if failed is not None:
        command = _command(t) if t.command and t.final else (t.announce_text or "")
        out.append(Finding("transfer-failed", "fail", {"command": command, "reply": failed},
                           tuple(e for e in (*evidence, _command(t), failed) if e)))
    return out


def _reply(reply: tuple[int, str] | None) -> str:
    return f"{reply[0]} {reply[1].splitlines()[0] if reply[1] else ''}".rstrip() if reply else ""


def _command(t: Transfer) -> str:
    return f"{t.command} {t.arg or ''}".rstrip() if t.command else ""


def _failed_reply(t: Transfer) -> str | None:
    if t.final and t.final[0] in DATA_FAILURES:
        return _reply(t.final)
    if t.announce_reply and t.announce_reply[0] in ANNOUNCE_FAILURES and t.connections:
        return _reply(t.announce_reply)
    return None


def _data_findings(t: Transfer, evidence: tuple[str, ...]) -> list[Finding]:
    if t.method is None or t.announced is None:
        return []
    conn = t.connection
    if conn is not None:
        params = {"method": t.method, "mode": "active" if t.active else "passive", "source": str(conn.initiator),
                  "target": str(conn.responder), "retransmissions": str(conn.retransmissions),
                  "announced": str(t.announced)}
        if conn.fate == "syn-unanswered":
            return [Finding("data-syn-unanswered", "fail", params, (*evidence, syn_line(conn)))]
        if conn.fate == "refused":
            return [Finding("data-refused", "fail", params, (*evidence, syn_line(conn)))]
        return []
    refused_announcement = t.announce_reply is not None and t.announce_reply[0] // 100 in (4, 5)
    if t.command is None or refused_announcement:
        return []
    if t.final is None or t.final[0] in DATA_FAILURES:
        params = {"method": t.method, "command": _command(t), "announced": str(t.announced)}
        return [Finding("data-never-opened", "fail", params, tuple(e for e in (*evidence, _reply(t.final)) if e))]
    return []


def _slow(s: Session, limit: float) -> list[Finding]:
    slow: list[LogEntry] = []
    for entry in s.log:
        if entry.side != "server" or entry.delay is None or entry.delay < limit or entry.code == 530:
            continue
        if entry.answers in TRANSFER_COMMANDS and entry.code is not None and entry.code >= 200:
            continue  # the final reply of a transfer comes when the transfer ends
        slow.append(entry)
    if not slow:
        return []
    worst = max(slow, key=lambda e: e.delay or 0.0)
    command = _command_before(s, worst)
    evidence = tuple(f"{e.delay:.3f} s: {_command_before(s, e)} -> {e.text}" for e in slow[:MAX_EVIDENCE])
    return [Finding("slow-reply", "warn", {"seconds": f"{worst.delay:.1f}", "command": command}, evidence)]


def _command_before(s: Session, reply: LogEntry) -> str:
    """The text of the command a reply answers (the latest one with its verb before the reply)."""
    for entry in reversed(s.log[: s.log.index(reply)]):
        if entry.side == "client" and entry.verb == reply.answers:
            return entry.text
    return reply.answers or ""


def _control(s: Session) -> list[Finding]:
    """A control connection that never came up: refused (RST) or unanswered."""
    conn = s.control
    if conn is None or s.log:
        return []
    params = {"address": s.server.ip, "port": str(s.server.port)}
    if conn.fate == "refused":
        return [Finding("control-refused", "fail", params, (syn_line(conn),))]
    if conn.fate == "syn-unanswered":
        params["seconds"] = f"{conn.last_ts - (conn.syn_ts or conn.first_ts):.1f}"
        return [Finding("control-timeout", "fail", params, (syn_line(conn),))]
    return []


@dataclass(frozen=True, slots=True)
class FailedLogins:
    """What another session's failed logins add to the evidence (a session's own facts are not kept for it)."""

    index: int
    client: Endpoint
    user: str
    reply: str
    count: int

    @classmethod
    def of(cls, s: Session) -> FailedLogins:
        user, reply = s.login_failures[-1]
        return cls(s.index, s.client, user, reply, len(s.login_failures))


def session_findings(s: Session, slow_reply: float, others: Sequence[FailedLogins] = ()) -> list[Finding]:
    """``others``: the failed logins of other sessions of the same client address to the same server (for
    repeated failures)."""
    out = _control(s)
    for t in s.transfers:
        out += transfer_findings(s, t)
    if s.login_failures:
        user, reply = s.login_failures[-1]
        evidence = [f"#{s.index} {s.client}: USER {u} -> {r}" for u, r in s.login_failures[:MAX_EVIDENCE]]
        for other in [o for o in others if o.index != s.index][:MAX_EVIDENCE]:
            evidence.append(f"#{other.index} {other.client}: USER {other.user} -> {other.reply} (x{other.count})")
        out.append(Finding("login-failed", "warn" if s.logged_in else "fail", {"user": user, "reply": reply},
                           tuple(evidence)))
    out += _slow(s, slow_reply)
    if s.still_encrypted:
        auth = [e.text for e in s.log if e.verb == "AUTH" or e.answers == "AUTH"]
        evidence = auth[:2] if auth else [f"{s.client} > {s.server}: 16 03 .. (TLS ClientHello)"]
        out.append(Finding("control-encrypted", "warn", {}, tuple(evidence)))
    return _dedupe(out)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """The same finding for every announcement of the same address (EPRT, then PORT) is one finding, with each
    occurrence's evidence."""
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], Finding] = {}
    for f in findings:
        key = (f.code, tuple(sorted((k, v) for k, v in f.params.items() if k != "command" or "announced" not in
                                    f.params)))
        if key in merged:
            old = merged[key]
            extra = tuple(e for e in f.evidence if e not in old.evidence)
            merged[key] = Finding(old.code, old.severity, old.params, (*old.evidence, *extra)[:MAX_EVIDENCE * 2])
        else:
            merged[key] = f
    return list(merged.values())
