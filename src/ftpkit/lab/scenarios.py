"""The scenarios, as one declarative table: each is its firewall/NAT rules per namespace, the server's settings
(passive range, announced address), what the client connects to, and what happens — the transfer outcome per mode
and the codes the doctor, the analyzer and the ftpkit server itself report (as verified with the ftpkit server and
client). The texts (summary, explanation) live in the diagnosis catalogs under ``[lab]``, in English and Japanese.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ftpkit.diagnosis import catalog
from ftpkit.lab.topology import CLIENT_LAN, PUBLIC_ADDRESS, SERVER_ADDRESS, SERVER_LAN, Names

# Transfer rows: the two modes, and passive mode by a client that trusts the 227 address (shown where it matters).
ACTIVE, PASSIVE, TRUSTING = "active", "passive", "passive-trusting"
PASSIVE_RANGE = (50000, 50099)


@dataclass(frozen=True)
class Rule:
    """One iptables command, run inside the namespace of ``where`` (client, router or server)."""

    where: str
    args: tuple[str, ...]

    def namespace(self, names: Names) -> str:
        return names[self.where]

    @property
    def argv(self) -> list[str]:
        return ["iptables", "-w", *self.args]

    def __str__(self) -> str:
        return "iptables " + shlex.join(self.args)


def rules(where: str, *lines: str) -> tuple[Rule, ...]:
    return tuple(Rule(where, tuple(shlex.split(line))) for line in lines)


@dataclass(frozen=True)
class Scenario:
    name: str
    rules: tuple[Rule, ...] = ()
    passive_ports: tuple[int, int] = PASSIVE_RANGE
    published: bool = False  # the server is reached at PUBLIC_ADDRESS through a DNAT on the router
    masquerade: bool = False  # the server announces PUBLIC_ADDRESS in 227 replies
    tls: bool = False  # FTPS: AUTH TLS required, the control connection is encrypted
    works: dict[str, bool] = field(default_factory=dict)  # row -> the transfer succeeds
    doctor: frozenset[str] = frozenset({"healthy"})  # codes of `ftpkit doctor` from the client namespace
    analyzer: frozenset[str] = frozenset()  # codes of `ftpkit analyze` on the router's captures
    server_side: frozenset[str] = frozenset()  # codes the ftpkit server logs of what it sees alone

    @property
    def target(self) -> str:
        """The server's address as the client sees it."""
        return PUBLIC_ADDRESS if self.published else SERVER_ADDRESS

    @property
    def masquerade_address(self) -> str | None:
        return PUBLIC_ADDRESS if self.masquerade else None

    def rows(self, modes: tuple[str, ...]) -> list[str]:
        """The transfers to run for ``modes``: a trusting passive client too where the 227 address matters."""
        out = [m for m in (ACTIVE, PASSIVE) if m in modes]
        if PASSIVE in modes and TRUSTING in self.works:
            out.append(TRUSTING)
        return out

    def summary(self, lang: str | None = None) -> str:
        return catalog(lang).text("lab", f"{self.name}-summary")

    def explanation(self, lang: str | None = None) -> str:
        return catalog(lang).text("lab", f"{self.name}-explanation")


_OPENED = f"{PASSIVE_RANGE[0]}:{PASSIVE_RANGE[1]}"

CLIENT_FIREWALL = rules(
    "client",
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "-A INPUT -j DROP",
)
CLIENT_HELPER = rules("client", "-t raw -A OUTPUT -p tcp --dport 21 -j CT --helper ftp")

SERVER_FIREWALL = rules(
    "server",
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "-A INPUT -p tcp --dport 21 -j ACCEPT",
    f"-A INPUT -p tcp --dport {_OPENED} -j ACCEPT",
    "-A INPUT -j DROP",
)

CLIENT_NAT = rules(
    "router",
    f"-t nat -A POSTROUTING -s {CLIENT_LAN} -o to-server -j MASQUERADE",
    "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "-A FORWARD -i to-client -j ACCEPT",
    "-A FORWARD -i to-server -o to-client -j DROP",
)
ROUTER_HELPER = rules("router", "-t raw -A PREROUTING -i to-client -p tcp --dport 21 -j CT --helper ftp")

SERVER_NAT = rules(
    "router",
    f"-t nat -A PREROUTING -d {PUBLIC_ADDRESS} -p tcp --dport 21 -j DNAT --to-destination {SERVER_ADDRESS}",
    f"-t nat -A PREROUTING -d {PUBLIC_ADDRESS} -p tcp --dport {_OPENED} -j DNAT --to-destination {SERVER_ADDRESS}",
    f"-t nat -A POSTROUTING -s {SERVER_LAN} -o to-client -j SNAT --to-source {PUBLIC_ADDRESS}",
    "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED,DNAT -j ACCEPT",
    "-A FORWARD -i to-server -j ACCEPT",
    "-A FORWARD -i to-client -o to-server -j DROP",
)

BOTH = {ACTIVE: True, PASSIVE: True}

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("open", works=BOTH),
    Scenario("client-firewall", CLIENT_FIREWALL, works={ACTIVE: False, PASSIVE: True},
             doctor=frozenset({"active-data-timeout"}),
             analyzer=frozenset({"data-syn-unanswered", "transfer-failed"}),
             server_side=frozenset({"active-data-timeout"})),
    Scenario("client-firewall-helper", CLIENT_HELPER + CLIENT_FIREWALL, works=BOTH),
    Scenario("server-firewall", SERVER_FIREWALL, works=BOTH),
    Scenario("server-firewall-wrong-range", SERVER_FIREWALL, passive_ports=(60000, 60099),
             works={ACTIVE: True, PASSIVE: False}, doctor=frozenset({"passive-data-timeout"}),
             analyzer=frozenset({"data-syn-unanswered"}), server_side=frozenset({"passive-data-timeout"})),
    Scenario("client-nat", CLIENT_NAT, works={ACTIVE: False, PASSIVE: True},
             doctor=frozenset({"nat-detected", "active-refused"}),
             analyzer=frozenset({"port-address-mismatch", "nat-detected"}),
             server_side=frozenset({"port-address-mismatch"})),
    Scenario("client-nat-helper", ROUTER_HELPER + CLIENT_NAT, works=BOTH,
             doctor=frozenset({"nat-detected", "alg-rewrote-port"}),
             analyzer=frozenset({"alg-rewrote-port", "nat-detected"})),
    # the same helper, blind: PORT crosses the router encrypted and arrives unchanged (and is refused)
    Scenario("client-nat-helper-tls", ROUTER_HELPER + CLIENT_NAT, tls=True, works={ACTIVE: False, PASSIVE: True},
             doctor=frozenset({"nat-detected", "active-refused", "control-encrypted"}),
             analyzer=frozenset({"control-encrypted"}), server_side=frozenset({"alg-blind-tls"})),
    Scenario("server-nat", SERVER_NAT, published=True, works={ACTIVE: True, PASSIVE: True, TRUSTING: False},
             doctor=frozenset({"passive-address-mismatch"}),
             analyzer=frozenset({"pasv-address-mismatch", "data-syn-unanswered"}),
             # the trusting client's passive connection never arrives, where the same client's others did
             server_side=frozenset({"masquerade-missing"})),
    # behind the NAT, the 227 naming the public address is a mismatch as seen from the server's side of the router
    Scenario("server-nat-masquerade", SERVER_NAT, published=True, masquerade=True,
             works={ACTIVE: True, PASSIVE: True, TRUSTING: True}, analyzer=frozenset({"pasv-address-mismatch"})),
)}
