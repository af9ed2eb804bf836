"""The doctor's run: the steps in the order experienced engineers take them, each bounded by the timeout."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Literal

from ftpkit.client.control import NotFTPError
from ftpkit.client.errors import ControlConnectionError
from ftpkit.client.net import resolve
from ftpkit.client.options import ClientOptions
from ftpkit.client.session import credentials
from ftpkit.client.url import FTPURL
from ftpkit.diagnosis import Finding
from ftpkit.doctor.diagnose import diagnose
from ftpkit.doctor.model import Check, DoctorReport, Facts
from ftpkit.doctor.probes import Session, SessionSpoiled, probe_active, probe_passive, reply_text, tcp_connect, timed
from ftpkit.protocol.features import parse_features
from ftpkit.protocol.hostport import DataMode, plain_ip
from ftpkit.tls import cipher_name

DoctorTLSMode = Literal["off", "explicit", "implicit"]
"""off: plain FTP; explicit: AUTH TLS (--tls); implicit: TLS from the first byte (ftps://)."""

STEPS = ("resolve", "control", "greeting", "tls", "login", "features", "epsv", "pasv", "eprt", "port")


@dataclass(frozen=True)
class DoctorOptions:
    timeout: float = 5.0
    active_address: str | None = None
    encoding: str = "utf-8"
    netrc_file: str | None = None
    modes: tuple[DataMode, ...] = ("passive", "active")
    tls: DoctorTLSMode = "off"
    ca_file: str | None = None
    verify: bool = True


async def run_doctor(url: FTPURL, options: DoctorOptions) -> DoctorReport:
    started = time.monotonic()
    user, password = credentials(url, options.netrc_file)
    facts = Facts(host=url.host, port=url.port, user=user, timeout=options.timeout, modes=options.modes)
    checks = {name: Check(name) for name in STEPS}
    findings = await _steps(url, password, options, facts, checks)
    if findings is None:
        findings = diagnose(facts)
    if facts.tls and not any(f.code == "tls-failed" for f in findings):
        findings.insert(0, Finding("control-encrypted", "info", evidence=(f"{facts.tls}",)))
    return DoctorReport(url.display, facts, list(checks.values()), findings, time.monotonic() - started)


async def _connect(facts: Facts, options: DoctorOptions, check: Check) -> tuple[Session | None, list[Finding]]:
    """Steps 2 and 3 for a new session: TCP connect to the first address that answers, then the greeting."""
    sock = None
    outcome, detail = "error", ""
    for address in facts.addresses:
        outcome, sock, detail = await tcp_connect(address, facts.port, options.timeout)
        check.sequence.append(f"=== connect {address}:{facts.port} -> {outcome}")
        if sock is not None:
            break
    params = {"address": facts.addresses[0] if facts.addresses else facts.host, "port": str(facts.port),
              "seconds": f"{options.timeout:g}"}
    if sock is None:
        check.say("fail", f"control-{outcome}", error=detail, **params)
        code = {"refused": "control-refused", "timeout": "control-timeout"}.get(outcome, "control-timeout")
        return None, [Finding(code, params=params, evidence=tuple(check.sequence))]
    facts.peer = plain_ip(sock.getpeername()[0])
    facts.local = plain_ip(sock.getsockname()[0])
    check.say("pass", "control-ok", address=facts.peer, port=facts.port, local=facts.local)
    session = Session(facts, ClientOptions(timeout=options.timeout, encoding=options.encoding, tls=options.tls,
                                           ca_file=options.ca_file, verify=options.verify))
    await session.control.adopt(sock, server_hostname=facts.host)
    return session, []


async def _tls(session: Session, facts: Facts, check: Check) -> list[Finding]:
    """Step 4: AUTH TLS (explicit) or TLS at once (implicit), the handshake and the certificate."""
    session.check = check
    implicit = session.options.tls == "implicit"
    if not implicit:
        reply = await session.command("AUTH", "TLS")
        if reply.code != 234:
            text = reply_text(reply)
            check.say("fail", "tls-refused", reply=text)
            return [Finding("tls-failed", params={"reason": f"AUTH TLS -> {text}"}, evidence=(text,))]
    try:
        await session.control.start_tls()
    except ControlConnectionError as exc:
        reason = str(exc).split(": ", 1)[-1]
        check.say("fail", "tls-fail", reason=reason)
        return [Finding("tls-failed", params={"reason": reason}, evidence=(reason,))]
    tls = session.control.stream.tls if session.control.stream else None
    cipher = cipher_name(tls) if tls is not None else None
    facts.tls = f"{tls.version()} {cipher}" if tls is not None and cipher else "TLS"
    check.say("pass", "tls-ok", how="implicit" if implicit else "AUTH TLS", tls=facts.tls)
    return []


async def _greet(session: Session, facts: Facts, check: Check, tls_check: Check | None = None) -> list[Finding]:
    session.check = check
    params = {"address": facts.peer, "port": str(facts.port), "seconds": f"{facts.timeout:g}"}
    tls_check = tls_check or Check("tls")
    if session.options.tls == "implicit":
        problems = await _tls(session, facts, tls_check)
        if problems:
            return problems
    try:
        reply = await session.control.read_reply()
    except NotFTPError as exc:
        check.say("fail", "greeting-not-ftp", text=exc.raw)
        return [Finding("not-ftp", params={**params, "greeting": exc.raw}, evidence=(exc.raw,))]
    except ControlConnectionError:
        check.say("fail", "greeting-silent", seconds=f"{facts.timeout:g}")
        return [Finding("no-greeting", params=params, evidence=(f"no reply within {facts.timeout:g} s",))]
    facts.greeting = reply_text(reply)
    if reply.code == 421:
        check.say("fail", "greeting-busy", reply=facts.greeting)
        return [Finding("server-busy", params={"reply": facts.greeting}, evidence=(facts.greeting,))]
    if reply.code != 220:
        check.say("fail", "greeting-not-ftp", text=facts.greeting)
        return [Finding("not-ftp", params={**params, "greeting": facts.greeting}, evidence=(facts.greeting,))]
    check.say("pass", "greeting-ok", reply=facts.greeting)
    return []


async def _login(session: Session, facts: Facts, password: str, check: Check) -> list[Finding]:
    session.check = check
    reply = await session.command("USER", facts.user)
    if reply.code == 331:
        reply = await session.command("PASS", password)
    text = reply_text(reply)
    if reply.code not in (230, 202):
        check.say("fail", "login-fail", user=facts.user, reply=text)
        return [Finding("login-failed", params={"user": facts.user, "reply": text}, evidence=(text,))]
    facts.logged_in = True
    if session.control.encrypted:
        await session.command("PBSZ", "0")
        prot = await session.command("PROT", "P")
        session.protected = prot.code == 200
    check.say("pass", "login-ok", user=facts.user, reply=text)
    return []


async def _new_session(facts: Facts, options: DoctorOptions, password: str) -> Session:
    """A fresh logged-in session after a probe left the previous one waiting (its sequence is not reported)."""
    session, _problems = await _connect(facts, options, Check("control"))
    if session is None:
        raise ControlConnectionError("cannot reconnect")
    if await _greet(session, facts, Check("greeting")):
        raise ControlConnectionError("cannot greet again")
    if options.tls == "explicit" and await _tls(session, facts, Check("tls")):
        raise ControlConnectionError("cannot start TLS again")
    if await _login(session, facts, password, Check("login")):
        raise ControlConnectionError("cannot log in again")
    return session


async def _steps(url: FTPURL, password: str, options: DoctorOptions, facts: Facts,
                 checks: dict[str, Check]) -> list[Finding] | None:
    # 1. resolve
    async with timed(checks["resolve"]) as check:
        try:
            addresses = await resolve(url.host, url.port, options.timeout)
        except (socket.gaierror, TimeoutError) as exc:
            error = getattr(exc, "strerror", None) or "no answer"
            check.say("fail", "resolve-fail", host=url.host, error=error)
            return [Finding("dns-failure", params={"host": url.host}, evidence=(f"{url.host}: {error}",))]
        facts.addresses = list(dict.fromkeys(plain_ip(address) for address in addresses))
        check.say("pass", "resolve-ok", host=url.host, addresses=", ".join(facts.addresses))
    # 2. control connection
    async with timed(checks["control"]) as check:
        session, problems = await _connect(facts, options, check)
    if session is None:
        return problems
    try:
        # 3. greeting
        async with timed(checks["greeting"]) as check:
            problems = await _greet(session, facts, check, checks["tls"])
        if problems:
            return problems
        # 4. TLS
        if options.tls == "explicit":
            async with timed(checks["tls"]) as check:
                problems = await _tls(session, facts, check)
            if problems:
                return problems
        elif options.tls == "off":
            checks["tls"].say("skipped", "tls-skipped")
        # 5. login
        async with timed(checks["login"]) as check:
            problems = await _login(session, facts, password, check)
        if problems:
            return problems
        # 6. features
        async with timed(checks["features"]) as check:
            session.check = check
            syst = reply_text(await session.command("SYST"))
            names = list(parse_features(await session.command("FEAT")))
            if "UTF8" in names:
                await session.command("OPTS", "UTF8 ON")
            facts.probe_offered = "FTPKIT-PROBE" in names
            if options.tls == "off" and "AUTH" in names:
                checks["tls"].say("skipped", "tls-offered")
            if facts.probe_offered:
                whoami = await session.command("SITE", "WHOAMI")
                if whoami.code == 200:
                    facts.server_sees = whoami.text.split()[0]
            check.say("pass", "features", syst=syst, feat=" ".join(names) or "-", utf8="UTF8" in names)
        # 7-8. the data connection in each mode and method
        for name, passive, method in (("epsv", True, "EPSV"), ("pasv", True, "PASV"), ("eprt", False, "EPRT"),
                                      ("port", False, "PORT")):
            check = checks[name]
            if ("passive" if passive else "active") not in options.modes:
                check.say("skipped", "mode-not-asked")
                continue
            if method in ("PASV", "PORT") and ":" in facts.peer:
                check.say("skipped", "ipv4-only", method=method)
                continue
            async with timed(check):
                session.check = check
                try:
                    if passive:
                        facts.passive.append(await probe_passive(session, method, check))
                    else:
                        facts.active.append(await probe_active(session, method, check, options.active_address))
                except SessionSpoiled as exc:
                    facts.active.append(exc.probe)
                    await session.close()
                    session = await _new_session(facts, options, password)
        return None
    except ControlConnectionError as exc:
        for check in checks.values():
            if check.status == "skipped" and check.detail == "skipped-earlier" and check.name not in ("tls",):
                check.say("skipped", "control-lost", error=str(exc))
                break
        return None
    finally:
        await session.close()
