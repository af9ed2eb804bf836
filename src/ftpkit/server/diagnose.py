"""The server's own diagnosis: what it sees alone, in the shared vocabulary of :mod:`ftpkit.diagnosis`.

Sans-I/O: each function takes the facts of one event (addresses, the announcement, what failed, how) and gives a
:class:`Diagnosis` or ``None``; :class:`RepeatSummary` folds repeated problems into one line per network and
window, with the clock passed in. :mod:`ftpkit.server.events` logs them, counts them and puts the hint into the
reply; nothing here touches a socket, a clock or a logger.

What the server can tell on its own:

- PORT/EPRT naming another address than the control connection's peer: a private one is a NAT without FTP helper
  in front of the client (or the client announces another interface): ``port-address-mismatch``, or
  ``alg-blind-tls`` when the control connection is encrypted (no helper can read it); a public one while the client
  is public too is a third host: ``port-bounce-attempt``.
- an active data connection that times out (``active-data-timeout``: a firewall in front of the client drops it)
  or is refused (``active-data-refused``).
- a passive port nobody connects to in time: ``passive-data-timeout`` (server firewall, passive range not
  forwarded); ``masquerade-missing`` when the 227 carried the server's own private address and passive data
  connections from the same client did work before (clients that substitute the control address work, the ones
  that trust the 227 do not); ``passive-foreign-source`` when a connection from another address was refused.
- a 227 announcing a private address to a client from a public one: ``masquerade-missing`` (a warning at once).
- a protected data connection without TLS session reuse: ``data-tls-not-resumed``; no passive port left:
  ``passive-ports-exhausted``.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from ftpkit.diagnosis import Finding, Severity, catalog
from ftpkit.protocol.hostport import DataMethod, DataMode, HostPort, explain_port

FailureKind = str
"""How a data connection failed to open: ``timeout``, ``refused``, ``unreachable``, ``exhausted``, ``error``."""


@functools.lru_cache(maxsize=4096)
def is_global(ip: str) -> bool:
    """A public address (the analyzer's test too): RFC 1918, CGNAT, loopback, link-local, the benchmarking range
    and other special-purpose addresses are not."""
    try:
        return ipaddress.ip_address(ip).is_global
    except ValueError:
        return False


def same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def network_of(ip: str) -> str:
    """The network a repeat summary groups clients by: the /24 of an IPv4 address, the /48 of an IPv6 one."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """One classified event: the finding (code, params, evidence), the data-connection mode it concerns, the
    client's address (for the repeat summary and the log: never a metric label), and whether a data connection
    failed or was refused because of it (``failure``) or it is a warning only."""

    finding: Finding
    mode: DataMode
    client: str
    failure: bool = True

    @property
    def code(self) -> str:
        return self.finding.code

    def hint(self, lang: str | None = "en") -> str:
        return self.finding.hint(lang)

    def log_text(self, lang: str | None = "en") -> str:
        """``[code] summary; advice (client): ...; advice (server): ...`` on one line."""
        cat = catalog(lang)
        parts = [f"[{self.code}] {self.finding.summary(lang)}"]
        parts += [f"{cat.word('advice-' + side)}: {text}" for side, text in self.finding.advice(lang)]
        return " — ".join(parts)

    def to_json(self, lang: str | None = "en") -> dict[str, object]:
        return {**self.finding.to_json(lang), "mode": self.mode, "client": self.client, "failure": self.failure}


def _diagnosis(code: str, severity: Severity, mode: DataMode, client: str, params: dict[str, str],
               evidence: tuple[str, ...] = (), failure: bool = True) -> Diagnosis:
    return Diagnosis(Finding(code, severity, params, evidence), mode, client, failure)


def active_announcement(command: str, target: HostPort, client: str, encrypted: bool) -> Diagnosis | None:
    """PORT/EPRT naming ``target`` while the control connection comes from ``client`` (refused by the server)."""
    if same_ip(target.host, client):
        return None
    params = {"command": command, "announced": str(target), "client": client}
    evidence = (command, f"control connection from {client}")
    if not is_global(target.host):
        code = "alg-blind-tls" if encrypted else "port-address-mismatch"
        return _diagnosis(code, "fail", "active", client, params, evidence)
    return _diagnosis("port-bounce-attempt", "fail", "active", client, params, evidence)


def active_failure(kind: FailureKind, target: HostPort, seconds: float, client: str,
                   detail: str = "") -> Diagnosis | None:
    """The server's connection to the announced address did not open (``kind`` from the data connection)."""
    params = {"announced": str(target), "seconds": f"{seconds:g}", "computation": explain_port(target.port),
              "client": client}
    evidence = tuple(e for e in (detail,) if e)
    if kind == "timeout":
        return _diagnosis("active-data-timeout", "fail", "active", client, params, evidence)
    if kind in ("refused", "unreachable"):
        return _diagnosis("active-data-refused", "fail", "active", client, params, evidence)
    return None


@dataclass(frozen=True, slots=True)
class PassiveFacts:
    """What the server knows about a passive announcement when nobody connected to it in time."""

    announced: HostPort  # as in the 227/229 reply (the port the server listened on)
    method: DataMethod
    seconds: float  # the accept timeout
    client: str  # the control connection's peer
    local: str  # the control connection's local address (what the 227 carries without a masquerade address)
    refused_sources: tuple[str, ...] = ()  # connections from other addresses refused meanwhile (ip:port)
    client_passive_successes: int = 0  # passive data connections from this client that did open, recently


def passive_timeout(f: PassiveFacts) -> Diagnosis:
    params = {"announced": str(f.announced), "computation": explain_port(f.announced.port),
              "seconds": f"{f.seconds:g}", "client": f.client, "port": str(f.announced.port)}
    evidence = (f"{f.method} announced {f.announced}", f"no connection from {f.client} within {f.seconds:g} s")
    if f.refused_sources:
        source = f.refused_sources[0].rsplit(":", 1)[0].strip("[]")
        return _diagnosis("passive-foreign-source", "fail", "passive", f.client, {**params, "source": source},
                          (*evidence, *(f"refused a connection from {s}" for s in f.refused_sources[:3])))
    if f.method == "PASV" and same_ip(f.announced.host, f.local) and not is_global(f.announced.host) \
            and f.client_passive_successes > 0:
        # Passive connections from this client did work: the range is open and forwarded. This one was aimed at
        # the 227 address, the server's own private one: a client that trusts it, behind a NAT it cannot cross.
        return _diagnosis("masquerade-missing", "fail", "passive", f.client, params,
                          (*evidence, f"{f.client_passive_successes} passive data connection(s) from {f.client} "
                                      "worked before: the range is open, the 227 address is not"))
    return _diagnosis("passive-data-timeout", "fail", "passive", f.client, params, evidence)


def passive_announcement(method: DataMethod, announced: HostPort, client: str) -> Diagnosis | None:
    """A 227 naming a private address to a client that comes from a public one: masquerade address missing (a
    warning: the client may substitute the control connection's address and work)."""
    if method != "PASV" or is_global(announced.host) or not is_global(client):
        return None
    params = {"announced": str(announced), "client": client, "computation": explain_port(announced.port)}
    return _diagnosis("masquerade-missing", "warn", "passive", client, params,
                      (f"227 announced {announced} to {client}",), failure=False)


def passive_foreign_source(port: int, source: str, client: str) -> Diagnosis:
    """A connection to a passive port from another address than the control connection's (refused); the
    transfer itself went on with the client's own connection."""
    params = {"port": str(port), "source": source, "client": client}
    return _diagnosis("passive-foreign-source", "warn", "passive", client, params,
                      (f"passive port {port}: connection from {source}, control connection from {client}",),
                      failure=False)


def passive_exhausted(reason: str, client: str) -> Diagnosis:
    return _diagnosis("passive-ports-exhausted", "fail", "passive", client, {"reason": reason, "client": client})


def data_tls_refused(refusal: str, mode: DataMode, client: str) -> Diagnosis | None:
    """A protected data connection refused with 522: the session-reuse check (a failed handshake is not a
    diagnosis of its own: it is counted among TLS failures)."""
    if "session" not in refusal:
        return None
    return _diagnosis("data-tls-not-resumed", "fail", mode, client, {"reason": refusal, "client": client})


def tls_failure_reason(text: str) -> str:
    """A bounded label for a failed TLS handshake, from its one-line description."""
    lowered = text.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return "timeout"
    if "closed" in lowered or "eof" in lowered or "reset" in lowered:
        return "closed"
    if "certificate" in lowered or "unknown ca" in lowered or "alert bad" in lowered:
        return "certificate"
    if "version" in lowered or "cipher" in lowered or "http request" in lowered or "protocol" in lowered \
            or "wrong" in lowered or "not a tls" in lowered or "clienthello" in lowered:
        return "protocol"  # not TLS at all, an SSL 2.0 hello, no common version or cipher, ALPN refused
    return "other"


# --- repeated problems: one line per network and window ------------------------------------------------------------
@dataclass
class _Group:
    clients: set[str] = field(default_factory=set)
    more_clients: int = 0  # beyond the bound of the set
    events: int = 0


class RepeatSummary:
    """Counts diagnoses per (code, client network) within a window; :meth:`lines` gives one line for each group
    that repeated (at least ``repeat`` events), most events first, at most ``max_lines`` and a line for the rest,
    and starts the next window. Memory is bounded by ``max_groups`` and ``max_clients`` per group."""

    def __init__(self, window: float, repeat: int = 2, max_lines: int = 5, max_groups: int = 1000,
                 max_clients: int = 1000) -> None:
        self.window = window
        self.repeat = repeat
        self.max_lines = max_lines
        self.max_groups = max_groups
        self.max_clients = max_clients
        self._groups: dict[tuple[str, str], _Group] = {}
        self.dropped = 0  # events of groups beyond max_groups in this window

    def note(self, diagnosis: Diagnosis) -> None:
        key = (diagnosis.code, network_of(diagnosis.client))
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self.max_groups:
                self.dropped += 1
                return
            group = self._groups[key] = _Group()
        group.events += 1
        if diagnosis.client in group.clients:
            return
        if len(group.clients) < self.max_clients:
            group.clients.add(diagnosis.client)
        else:
            group.more_clients += 1

    def lines(self, lang: str | None = "en") -> list[str]:
        """The lines of the window that ends now; the counts start again."""
        groups, self._groups = self._groups, {}
        dropped, self.dropped = self.dropped, 0
        repeated = sorted(((key, g) for key, g in groups.items() if g.events >= self.repeat),
                          key=lambda item: (-item[1].events, item[0]))
        cat = catalog(lang)
        window = f"{self.window:g}"
        out = []
        for (code, network), group in repeated[:self.max_lines]:
            params = {"clients": str(len(group.clients) + group.more_clients), "network": network,
                      "events": str(group.events), "window": window}
            text = cat.entry_text(code, "repeat", params) or f"{code}: {params['events']} times from {network}"
            out.append(f"[{code}] {text}")
        more = len(repeated) - self.max_lines
        if more > 0 or dropped:
            out.append(cat.word("repeat-more", count=str(max(more, 0) + (1 if dropped else 0)), window=window))
        return out
