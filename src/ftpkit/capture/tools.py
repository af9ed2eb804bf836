"""The capture tools ``ftpkit analyze --live`` runs: which one is there, its command line, what it said when it
would not start (one line naming what is missing: the tool, a capability, the interface, a filter that does not
compile), and its counters when it stopped (``N packets dropped by kernel``)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

TOOLS = ("tcpdump", "dumpcap")
READY = {"tcpdump": b"listening on", "dumpcap": b"File: "}
"""What each tool writes to stderr once it captures (dumpcap says "Capturing on" before it knows it may)."""


class LiveError(Exception):
    """The capture cannot run: ``str()`` is the one line to show (exit code 2)."""


@dataclass
class ToolStats:
    captured: int | None = None
    received: int | None = None
    dropped: int | None = None  # dropped by the kernel: the analyzer (or the tool) did not keep up


def find_tool(preferred: str | None = None) -> tuple[str, str]:
    """(name, path) of the capture tool; :class:`LiveError` naming what is missing."""
    for name in (preferred,) if preferred else TOOLS:
        path = shutil.which(name)
        if path:
            return name, path
    if preferred:
        raise LiveError(f"--live needs {preferred} on PATH, and it is not there (on Debian: apt install "
                        f"{'tcpdump' if preferred == 'tcpdump' else 'wireshark-common'})")
    raise LiveError("--live needs tcpdump or dumpcap on PATH, and neither is there (on Debian: apt install tcpdump)")


def tool_argv(name: str, path: str, iface: str, bpf: str, buffer_mib: int) -> list[str]:
    if name == "tcpdump":  # -U: every packet handed over is written at once; -w -: pcap on stdout
        return [path, "-i", iface, "-n", "-s", "0", "-U", "-B", str(buffer_mib * 1024), "-w", "-", bpf]
    return [path, "-i", iface, "-q", "-s", "0", "-B", str(buffer_mib), "-P", "-w", "-", "-f", bpf]


def explain_failure(name: str, path: str, iface: str, said: str) -> str:
    """One line for a capture tool that would not start."""
    lines = [line.strip() for line in said.splitlines() if line.strip() and not line.startswith("Capturing on")]
    text = "; ".join(lines) or "no message"
    low = text.lower()
    if "permission" in low or "not permitted" in low:
        return (f"capturing on {iface} needs the CAP_NET_RAW and CAP_NET_ADMIN capabilities: run it as root, or give "
                f"them to {name} (setcap cap_net_raw,cap_net_admin=eip {path}); {name} said: {text}")
    if "no such device" in low or "doesn't exist" in low or "no such interface" in low:
        return f"-i {iface}: there is no such interface here; {name} said: {text}"
    if "not up" in low:
        return f"-i {iface}: the interface is down (ip link set {iface} up); {name} said: {text}"
    if any(word in low for word in ("syntax error", "filter", "unknown port", "unknown host", "unknown protocol")):
        return f"--filter: {name} cannot compile the capture filter; {name} said: {text}"
    return f"{name} on {iface} stopped at once; it said: {text}"


def parse_stats(name: str, said: str) -> ToolStats:
    stats = ToolStats()
    if name == "tcpdump":
        for key, attr in (("captured", "captured"), ("received by filter", "received"),
                          ("dropped by kernel", "dropped")):
            m = re.search(rf"(\d+) packets? {key}", said)
            if m:
                setattr(stats, attr, int(m.group(1)))
    else:
        m = re.search(r"received/dropped on interface '[^']*': (\d+)/(\d+)", said)
        if m:
            stats.received, stats.dropped = int(m.group(1)), int(m.group(2))
        m = re.search(r"Packets captured: (\d+)", said)
        if m:
            stats.captured = int(m.group(1))
    return stats
