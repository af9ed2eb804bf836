"""The network of the ``cluster`` scenario: six namespaces around one router, addresses from 198.18.0.0/15 only.

::

    client    eth0 198.18.1.2/24 ─┐
    balancer  eth0 198.18.2.2/24 ─┤  router: to-client 198.18.1.1, to-balancer 198.18.2.1,
    node1     eth0 198.19.1.2/24 ─┤          to-node1 198.19.1.1, to-node2 198.19.2.1, to-services 198.19.3.1
    node2     eth0 198.19.2.2/24 ─┤          (forwarding on; each node's public address 198.18.3.1N is a DNAT of
    services  eth0 198.19.3.2/24 ─┘          its passive range only: the ProFTPD-on-AWS model)

The client reaches the service at the balancer's address; HAProxy forwards control connections to the nodes with a
PROXY v2 header; each node announces its public address in 227, and the data connection goes from the client
through the router's DNAT straight to that node. The nodes reach SeaweedFS and PostgreSQL in ``services``.
The names are ``ftpkit-lab<PID>-<role>`` like every lab run's (``ftpkit lab down`` knows them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ftpkit.lab.processes import PREFIX, in_namespace
from ftpkit.lab.topology import run, teardown

ROLES = ("client", "router", "balancer", "node1", "node2", "services")
NODES = ("node1", "node2")

CLIENT_ADDRESS = "198.18.1.2"
BALANCER_ADDRESS = "198.18.2.2"
SERVICES_ADDRESS = "198.19.3.2"
NODE_ADDRESS = {"node1": "198.19.1.2", "node2": "198.19.2.2"}  # where HAProxy and the DNAT send connections
NODE_PUBLIC = {"node1": "198.18.3.11", "node2": "198.18.3.12"}  # announced in 227 (masquerade address)
NODE_PASSIVE = {"node1": (50000, 50099), "node2": (50100, 50199)}

_LANS = {  # role -> (its address, the router's address on that link), all /24
    "client": (CLIENT_ADDRESS, "198.18.1.1"),
    "balancer": (BALANCER_ADDRESS, "198.18.2.1"),
    "node1": (NODE_ADDRESS["node1"], "198.19.1.1"),
    "node2": (NODE_ADDRESS["node2"], "198.19.2.1"),
    "services": (SERVICES_ADDRESS, "198.19.3.1"),
}


@dataclass(frozen=True)
class ClusterNames:
    tag: str

    def __getitem__(self, role: str) -> str:
        if role not in ROLES:
            raise KeyError(role)
        return f"{PREFIX}{self.tag}-{role}"

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(self[role] for role in ROLES)


def cluster_names(pid: int | None = None) -> ClusterNames:
    return ClusterNames(f"lab{os.getpid() if pid is None else pid}")


def links() -> list[tuple[str, str, str]]:
    """``(role, its address/24, the router's side/24)`` for every cable, with the router's interface ``to-ROLE``."""
    return [(role, f"{mine}/24", f"{router}/24") for role, (mine, router) in _LANS.items()]


def dnat_rules() -> list[list[str]]:
    """The router's iptables commands: each node's public address forwards that node's passive range to it."""
    out = []
    for node in NODES:
        low, high = NODE_PASSIVE[node]
        out.append(["-t", "nat", "-A", "PREROUTING", "-d", NODE_PUBLIC[node], "-p", "tcp", "--dport",
                    f"{low}:{high}", "-j", "DNAT", "--to-destination", NODE_ADDRESS[node]])
    return out


class ClusterTopology:
    """Builds the six namespaces; :meth:`destroy` removes whatever was built, also after a partial build (with any
    process still inside, see :func:`ftpkit.lab.topology.teardown`)."""

    def __init__(self, names: ClusterNames) -> None:
        self.names = names
        self.created: list[str] = []

    def build(self) -> None:
        names = self.names
        teardown(list(names.all))  # a run's names that exist already are the leftovers of a dead process
        for namespace in names.all:
            run(["ip", "netns", "add", namespace])
            self.created.append(namespace)
            run(in_namespace(namespace, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                                         "net.ipv6.conf.default.disable_ipv6=1"]))
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        router = names["router"]
        for role, mine, theirs in links():
            run(["ip", "-n", names[role], "link", "add", "eth0", "type", "veth", "peer", "name", f"to-{role}",
                 "netns", router])
            run(["ip", "-n", names[role], "address", "add", mine, "dev", "eth0"])
            run(["ip", "-n", router, "address", "add", theirs, "dev", f"to-{role}"])
            run(["ip", "-n", names[role], "link", "set", "eth0", "up"])
            run(["ip", "-n", router, "link", "set", f"to-{role}", "up"])
            run(["ip", "-n", names[role], "route", "add", "default", "via", theirs.split("/")[0]])
        run(in_namespace(router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        for rule in dnat_rules():
            iptables(router, rule)

    def destroy(self) -> None:
        teardown(list(reversed(self.created)))
        self.created.clear()


def iptables(namespace: str, args: list[str]) -> None:
    run(in_namespace(namespace, ["iptables", "-w", *args]))


def shape(namespace: str, interface: str, rate: str | None) -> None:
    """Limit what leaves ``interface`` to ``rate`` (a token bucket, ``tc``), or remove the limit (``None``)."""
    if rate is None:
        run(in_namespace(namespace, ["tc", "qdisc", "del", "dev", interface, "root"]))
    else:
        run(in_namespace(namespace, ["tc", "qdisc", "add", "dev", interface, "root", "tbf", "rate", rate,
                                     "burst", "32kb", "latency", "400ms"]))
