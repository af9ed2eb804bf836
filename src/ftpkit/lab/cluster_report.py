"""The report of ``ftpkit lab run cluster``: the namespaces, then each check with what it showed (terminal or JSON)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Console
from rich.text import Text

from ftpkit.diagnosis import catalog
from ftpkit.lab.cluster import ClusterReport
from ftpkit.lab.cluster_services import PG_PORT, S3_PORT
from ftpkit.lab.cluster_topology import NODE_PASSIVE, NODE_PUBLIC, NODES, links

NAME = "cluster"
def _node(node: str) -> str:
    low, high = NODE_PASSIVE[node]
    return f"ftpkit serve (passive {low}-{high}, announces {NODE_PUBLIC[node]})"


WHAT = {"client": "ftpkit get/put/ls, ftpkit doctor", "balancer": "haproxy :21 (send-proxy-v2)",
        **{node: _node(node) for node in NODES},
        "services": f"weed mini (S3 :{S3_PORT}), postgres :{PG_PORT}"}


def topology_lines(report: ClusterReport) -> list[str]:
    width = max(len(report.names[role]) for role, _, _ in links())
    out = [f"{report.names['router']:{width}}  the router between them (forwarding, DNAT of each node's public "
           "address to its passive range)"]
    for role, mine, theirs in links():
        out.append(f"{report.names[role]:{width}}  eth0 {mine:16} ↔ router to-{role} {theirs:16} {WHAT[role]}")
    return out


def render(report: ClusterReport, console: Console, lang: str) -> None:
    cat = catalog(lang)
    console.print(Text(cat.text("lab", "title", scenario=NAME), style="bold"))
    console.print(cat.text("lab", f"{NAME}-summary"))
    for line in topology_lines(report):
        console.print(Text(f"  {line}", style="dim"))
    for number, check in enumerate(report.checks, 1):
        mark, style = ("✓", "green") if check.ok else ("✗", "bold red")
        console.print(Text.assemble((f"{mark} ", style), (f"{number}. {check.name}", "bold")))
        for line in check.lines:
            console.print(f"    {line}")
    console.print(Text(f"{report.seconds:.1f} s", style="dim"))


def to_json(report: ClusterReport, lang: str) -> dict[str, Any]:
    return {
        "scenario": NAME,
        "summary": catalog(lang).text("lab", f"{NAME}-summary"),
        "as_expected": report.as_expected,
        "namespaces": list(report.names.all),
        "checks": [dataclasses.asdict(check) for check in report.checks],
        "started": report.started,
        "workdir": report.workdir,
        "seconds": round(report.seconds, 3),
    }
