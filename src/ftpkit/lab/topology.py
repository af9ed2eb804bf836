"""The lab's network: three network namespaces (client, router, server) joined by two veth pairs.

::

    ftpkit-client  eth0      198.18.1.2/24
          │
    ftpkit-router  to-client 198.18.1.1/24   (forwarding on)
                   to-server 198.19.1.1/24
          │
    ftpkit-server  eth0      198.19.1.2/24

Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking) only. The veth pairs are created directly inside the
namespaces (``ip -n NS link add ... peer ... netns NS2``), so nothing ever appears among the host's interfaces, and
every command that changes something runs inside a namespace. Deleting the namespaces removes the interfaces, the
routes and every firewall rule with them.

Names: the lab of ``ftpkit lab up`` is ``ftpkit-client``, ``ftpkit-router``, ``ftpkit-server`` (one at a time, for
``ftpkit lab exec``); each ``ftpkit lab run`` uses ``ftpkit-lab<PID>-client`` and so on, so that runs (two users,
two test sessions) never collide, and the leftovers of a run that was killed are recognisable by their dead PID.
Other ``ftpkit-`` namespaces (the analyzer's tests use ``ftpkit-test-*``) are never touched. The processes inside
a namespace are reaped by :mod:`ftpkit.lab.processes` before it is deleted.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ftpkit.lab.processes import PREFIX, LabError, in_namespace, kill_namespace_processes, netns_dir, pid_alive

ROLES = ("client", "router", "server")
_RUN_NAME = re.compile(r"^ftpkit-lab(\d+)-(client|router|server|balancer|node1|node2|services)$")  # + cluster


@dataclass(frozen=True)
class Names:
    """The namespace names of one lab: ``tag`` empty for the lab of ``up``, ``lab<PID>`` for a run."""

    tag: str = ""

    def __getitem__(self, role: str) -> str:
        if role not in ROLES:
            raise KeyError(role)
        return f"{PREFIX}{self.tag}-{role}" if self.tag else f"{PREFIX}{role}"

    @property
    def client(self) -> str:
        return self["client"]

    @property
    def router(self) -> str:
        return self["router"]

    @property
    def server(self) -> str:
        return self["server"]

    @property
    def all(self) -> tuple[str, str, str]:
        return self.client, self.router, self.server


HANDS_ON = Names()  # `ftpkit lab up` / `exec` / `down`


def names_for_run(pid: int | None = None) -> Names:
    return Names(f"lab{os.getpid() if pid is None else pid}")


CLIENT_LAN, SERVER_LAN = "198.18.1.0/24", "198.19.1.0/24"
CLIENT_ADDRESS, ROUTER_CLIENT_SIDE = "198.18.1.2", "198.18.1.1"
SERVER_ADDRESS, ROUTER_SERVER_SIDE = "198.19.1.2", "198.19.1.1"
PUBLIC_ADDRESS = "198.18.0.21"  # the server's published address on the router (server-nat scenarios)

COMMAND_TIMEOUT = 15.0  # seconds for one ip/iptables/sysctl command


@dataclass(frozen=True)
class Interface:
    namespace: str
    name: str
    address: str  # with its prefix length
    faces: str  # what is at the other end of the cable


def interfaces(names: Names, published: bool) -> list[Interface]:
    router_client_side = f"{ROUTER_CLIENT_SIDE}/24" + (f", {PUBLIC_ADDRESS}/32" if published else "")
    return [
        Interface(names.client, "eth0", f"{CLIENT_ADDRESS}/24", names.router),
        Interface(names.router, "to-client", router_client_side, names.client),
        Interface(names.router, "to-server", f"{ROUTER_SERVER_SIDE}/24", names.server),
        Interface(names.server, "eth0", f"{SERVER_ADDRESS}/24", names.router),
    ]


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a short command to completion; its stdout, or :class:`LabError` with its stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LabError(f"{argv[0]}: not found (install iproute2 and iptables)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)}: no answer within {timeout:g} s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)}: {message[-1] if message else f'exit {done.returncode}'}")
    return done.stdout


def privilege_problem(euid: int | None = None, caps: int | None = None) -> str | None:
    """Why this process cannot build the lab, or ``None``: root, or CAP_NET_ADMIN with CAP_SYS_ADMIN (``ip netns
    add`` mounts the namespace file). ``euid`` and ``caps`` (the effective capability mask) default to this
    process's own."""
    if (os.geteuid() if euid is None else euid) == 0:
        return None
    if caps is None:
        try:
            with open("/proc/self/status", encoding="ascii") as status:
                caps = next((int(line.split()[1], 16) for line in status if line.startswith("CapEff:")), 0)
        except OSError:
            caps = 0
    if caps & (1 << 12) and caps & (1 << 21):  # CAP_NET_ADMIN, CAP_SYS_ADMIN
        return None
    return "needs root (or CAP_NET_ADMIN) to create network namespaces; run it with sudo"


def _existing() -> set[str]:
    try:
        return set(os.listdir(netns_dir()))
    except FileNotFoundError:
        return set()


def lab_namespaces(names: Names | None = None) -> list[str]:
    """The namespaces of the lab ``names`` that exist now; without ``names``, those of every lab (``up`` and every
    run, running or left over). Read from the directory ``ip netns`` keeps them in: ``ip netns list`` can fail while
    another program deletes a namespace of its own, and a failed listing must not look like an empty one."""
    existing = _existing()
    if names is not None:
        return [name for name in names.all if name in existing]
    return sorted(name for name in existing if name in HANDS_ON.all or _RUN_NAME.match(name))


def leftover_namespaces() -> list[str]:
    """Lab namespaces nobody runs any more: those of ``up`` and those of runs whose process has ended."""
    out: list[str] = []
    for name in lab_namespaces():
        match = _RUN_NAME.match(name)
        if match is None or not pid_alive(int(match.group(1))):
            out.append(name)
    return out


def teardown(namespaces: Sequence[str]) -> list[str]:
    """Remove the given lab namespaces with any process inside. Idempotent: the names removed."""
    removed: list[str] = []
    for namespace in namespaces:
        if namespace not in _existing():
            continue
        kill_namespace_processes(namespace)
        try:
            run(["ip", "netns", "delete", namespace])
        except LabError:
            if namespace in _existing():
                raise
        removed.append(namespace)
    return removed


class Topology:
    """Builds the three namespaces of ``names``; :meth:`destroy` removes whatever was built, also after a partial
    build."""

    def __init__(self, names: Names, published: bool = False) -> None:
        self.names = names
        self.published = published
        self.created: list[str] = []

    @property
    def interfaces(self) -> list[Interface]:
        return interfaces(self.names, self.published)

    def build(self) -> None:
        names = self.names
        busy = lab_namespaces(names)
        if busy and names == HANDS_ON:
            raise LabError(f"a lab is already up ({', '.join(busy)}); run `ftpkit lab down` first")
        teardown(busy)  # a run's names that exist already are the leftovers of a dead process with our PID
        for namespace in names.all:
            run(["ip", "netns", "add", namespace])
            self.created.append(namespace)
            run(in_namespace(namespace, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                                         "net.ipv6.conf.default.disable_ipv6=1"]))
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        run(["ip", "-n", names.client, "link", "add", "eth0", "type", "veth", "peer", "name", "to-client",
             "netns", names.router])
        run(["ip", "-n", names.server, "link", "add", "eth0", "type", "veth", "peer", "name", "to-server",
             "netns", names.router])
        for iface in self.interfaces:
            for address in iface.address.split(", "):
                run(["ip", "-n", iface.namespace, "address", "add", address, "dev", iface.name])
            run(["ip", "-n", iface.namespace, "link", "set", iface.name, "up"])
        run(["ip", "-n", names.client, "route", "add", "default", "via", ROUTER_CLIENT_SIDE])
        run(["ip", "-n", names.server, "route", "add", "default", "via", ROUTER_SERVER_SIDE])
        run(in_namespace(names.router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))

    def destroy(self) -> None:
        teardown(list(reversed(self.created)))
        self.created.clear()
