"""From the facts of the probes to findings: which connection fails, in which mode, and why. Pure logic."""

from __future__ import annotations

from ftpkit.diagnosis import Finding
from ftpkit.doctor.model import Facts, PassiveProbe
from ftpkit.protocol.hostport import HostPort, explain_port


def _hp(hp: HostPort | None) -> str:
    return str(hp) if hp else "?"


def _computation(hp: HostPort | None) -> str:
    return explain_port(hp.port) if hp else "?"


def _passive_outcome(p: PassiveProbe) -> str:
    """What a failed passive connection met: at the control peer's address when the announced one is unusable from
    here (a private address seen from elsewhere: clients substitute the peer's), else at the announced address
    itself, as with a node behind a load balancer, whose 227 names the node and not the balancer dialled."""
    if p.substituted != "not-tried" and p.classification != "other-host":
        return p.substituted
    return p.direct


def passive_findings(facts: Facts) -> list[Finding]:
    out: list[Finding] = []
    probes = facts.passive
    if not probes:
        return out
    answered = [p for p in probes if p.announced is not None]
    if not answered:
        refused = "; ".join(f"{p.method} -> {p.reply}" for p in probes)
        out.append(Finding("passive-refused", params={"command": "EPSV/PASV", "reply": refused},
                           evidence=tuple(f"{p.method}: {p.reply}" for p in probes)))
        return out
    pasv = next((p for p in probes if p.method == "PASV" and p.announced is not None), None)
    if pasv is not None and pasv.classification != "same" and pasv.announced is not None:
        evidence: tuple[str, ...] = (
            f"PASV -> {pasv.reply}", f"{pasv.announced} ({_computation(pasv.announced)})",
            f"control connection -> {facts.peer}:{facts.port}",
            f"connect {pasv.announced} -> {pasv.direct}",
            f"connect {facts.peer}:{pasv.announced.port} -> {pasv.substituted}")
        if pasv.classification in ("unspecified", "loopback", "link-local"):
            out.append(Finding("passive-address-unusable", "fail" if not pasv.worked else "warn", params={
                "announced": pasv.announced.host, "why": pasv.classification}, evidence=evidence))
        else:
            out.append(Finding("passive-address-mismatch", "warn" if pasv.worked else "fail", params={
                "announced": pasv.announced.host, "control_peer": facts.peer}, evidence=evidence))
    if any(p.worked for p in probes):
        return out
    failed = [p for p in answered if not p.worked]
    for p in failed:
        outcome = _passive_outcome(p)
        params = {"announced": _hp(p.announced), "computation": _computation(p.announced)}
        tries = (f"connect {_hp(p.announced)} -> {p.direct}",) + (
            (f"connect {facts.peer}:{p.announced.port} -> {p.substituted}",)
            if p.substituted != "not-tried" and p.announced else ())
        evidence = (f"{p.method} -> {p.reply}", *tries) + ((f"LIST -> {p.list_reply}",) if p.list_reply else ())
        if outcome == "timeout":
            out.append(Finding("passive-data-timeout", params=params, evidence=evidence))
            break
        if outcome == "refused":
            out.append(Finding("passive-data-refused", params=params, evidence=evidence))
            break
    else:
        p = failed[0]
        out.append(Finding("transfer-failed", params={"command": f"LIST ({p.method})", "reply": p.list_reply},
                           evidence=(f"{p.method} -> {p.reply}",)))
    return out


def active_findings(facts: Facts) -> list[Finding]:
    out: list[Finding] = []
    probes = facts.active
    if not probes:
        return out
    for p in probes:
        if p.server_received and p.sent and p.server_received != p.sent:
            out.append(Finding("alg-rewrote-port", "warn", params={
                "command": p.method, "sent": p.sent, "received": p.server_received},
                evidence=(f"sent: {p.sent}", f"the server received: {p.server_received}")))
            break
    if any(p.worked for p in probes):
        return out
    accepted = [p for p in probes if p.code is None or p.code < 300]  # no reply: the server was busy connecting
    if not accepted:
        p = probes[-1]
        out.append(Finding("active-refused", params={"command": p.sent or p.method, "reply": p.reply},
                           evidence=tuple(f"{q.sent} -> {q.reply}" for q in probes)))
        return out
    p = accepted[0]
    if p.connected_from is None:
        out.append(Finding("active-data-timeout", params={"announced": _hp(p.announced), "seconds": f"{p.waited:g}"},
                           evidence=(f"{p.sent} -> {p.reply}", f"LIST -> {p.list_reply or 'no reply yet'}",
                                     f"accept {_hp(p.announced)} -> timeout ({p.waited:g} s)")))
    else:
        out.append(Finding("transfer-failed", params={"command": f"LIST ({p.method})", "reply": p.list_reply},
                           evidence=(f"{p.sent} -> {p.reply}",)))
    return out


def nat_findings(facts: Facts) -> list[Finding]:
    if facts.server_sees and facts.local and facts.server_sees != facts.local:
        return [Finding("nat-detected", "info", params={"seen": facts.server_sees, "local": facts.local},
                        evidence=(f"SITE WHOAMI -> {facts.server_sees}", f"local address {facts.local}"))]
    return []


def diagnose(facts: Facts) -> list[Finding]:
    findings = nat_findings(facts) + passive_findings(facts) + active_findings(facts)
    problems = [f for f in findings if f.severity in ("warn", "fail")]
    untested = [mode for mode in facts.modes if not (facts.passive if mode == "passive" else facts.active)]
    if not problems and not untested:  # never "healthy" when a mode that was asked for could not be tested
        findings.append(Finding("healthy", "ok"))
    return findings

