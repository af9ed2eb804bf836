"""What the doctor observes: checks in order, with the facts of each data-connection probe. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ftpkit.diagnosis import Finding
from ftpkit.protocol.hostport import DataMode, HostPort

Status = Literal["pass", "warn", "fail", "skipped"]
Outcome = Literal["ok", "timeout", "refused", "error", "not-tried"]


@dataclass
class Check:
    """One step: its name and detail as catalog keys (``[checks]``, ``[details]``) with their values, its status,
    duration, and the sequence of what was sent and seen (protocol lines, shown verbatim)."""

    name: str
    status: Status = "skipped"
    detail: str = "skipped-earlier"
    params: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    sequence: list[str] = field(default_factory=list)

    def say(self, status: Status, detail: str, **params: object) -> None:
        self.status, self.detail = status, detail
        self.params = {key: str(value) for key, value in params.items()}


@dataclass
class PassiveProbe:
    method: str  # EPSV | PASV
    reply: str = ""
    code: int | None = None
    announced: HostPort | None = None
    classification: str = ""  # same | unspecified | loopback | link-local | private | other-host
    direct: Outcome = "not-tried"  # connecting to the announced address
    substituted: Outcome = "not-tried"  # connecting to the control peer's address instead
    list_reply: str = ""
    list_ok: bool = False

    @property
    def worked(self) -> bool:
        return self.list_ok


@dataclass
class ActiveProbe:
    method: str  # EPRT | PORT
    announced: HostPort | None = None
    sent: str = ""
    reply: str = ""
    code: int | None = None
    connected_from: tuple[str, int] | None = None
    server_received: str | None = None  # SITE LASTPORT (ftpkit servers)
    list_reply: str = ""
    list_ok: bool = False
    waited: float = 0.0

    @property
    def worked(self) -> bool:
        return self.list_ok


@dataclass
class Facts:
    host: str
    port: int
    user: str
    addresses: list[str] = field(default_factory=list)
    peer: str = ""  # the control connection's remote address
    local: str = ""  # and local address
    greeting: str = ""
    logged_in: bool = False
    server_sees: str | None = None  # SITE WHOAMI
    probe_offered: bool = False
    passive: list[PassiveProbe] = field(default_factory=list)
    active: list[ActiveProbe] = field(default_factory=list)
    timeout: float = 5.0
    tls: str = ""  # the control connection's TLS version and cipher, when TLS is in use
    modes: tuple[DataMode, ...] = ("passive", "active")  # the modes asked for


@dataclass
class DoctorReport:
    url: str
    facts: Facts
    checks: list[Check]
    findings: list[Finding]
    seconds: float

    @property
    def healthy(self) -> bool:
        """Diagnosed healthy: every mode asked for was tested and no finding is a problem (``info`` findings, such
        as an encrypted control connection, are not)."""
        return any(f.code == "healthy" for f in self.findings) and not any(
            f.severity in ("warn", "fail") for f in self.findings)

    def mode_ok(self, mode: DataMode) -> bool | None:
        probes = self.facts.passive if mode == "passive" else self.facts.active
        if not probes:
            return None
        return any(p.worked for p in probes)
