"""The checks of the ``cluster`` scenario, each run for real against the running cluster from the client namespace
(see :mod:`ftpkit.lab.cluster` for the list). Which node served a session is read from the session itself: the
node's greeting (``220 ftpkit node1 ready``) and the address of its 227 reply (the node's public address)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftpkit.lab.cluster_topology import (
    BALANCER_ADDRESS,
    CLIENT_ADDRESS,
    NODE_PASSIVE,
    NODE_PUBLIC,
    NODES,
    SERVICES_ADDRESS,
    iptables,
    shape,
)
from ftpkit.lab.processes import LabError
from ftpkit.protocol.hostport import HostPortError, parse_pasv

if TYPE_CHECKING:
    from ftpkit.lab.cluster import Cluster

FTPKIT = [sys.executable, "-m", "ftpkit"]
USER, PASSWORD = "alice", "cluster-lab-secret"  # the one account, added once to PostgreSQL
PAYLOAD_SIZE = 8 << 20
THROTTLE = "16mbit"  # the router's link to the client during the failover check: the download takes ~4 s
KILL_AFTER = 1 << 20  # bytes downloaded before the serving node is killed
ATTEMPTS = 6  # sessions tried to reach a given node (round robin: two are enough)
_BANNER = re.compile(r"^<-- 220[ -]ftpkit (node\d) ready")
_REST = re.compile(r"^--> REST (\d+)")


@dataclass
class Check:
    """One check's outcome: its lines for the report, and the facts behind them (for ``--json`` and the tests)."""

    name: str
    ok: bool
    lines: list[str]
    data: dict[str, Any] = field(default_factory=dict)


def sessions(transcript: str) -> list[dict[str, Any]]:
    """The sessions of a ftpkit client's ``-v`` transcript, in order: the node that greeted, the address its 227
    announced, the REST offset sent, whether the login was accepted."""
    found: list[dict[str, Any]] = []
    for line in transcript.splitlines():
        banner = _BANNER.match(line)
        if banner:
            found.append({"node": banner.group(1), "announced": None, "rest": None, "logged_in": False})
        elif not found:
            continue
        elif line.startswith("<-- 230"):
            found[-1]["logged_in"] = True
        elif line.startswith("<-- 227"):
            with contextlib.suppress(HostPortError):
                found[-1]["announced"] = parse_pasv(line[4:]).host
        elif rest := _REST.match(line):
            found[-1]["rest"] = int(rest.group(1))
    return found


def _client(kind: str, *args: str) -> list[str]:
    return [*FTPKIT, kind, "-v", "--passive", "--no-epsv", "--trust-pasv-address", "--timeout", "5", *args]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def logins(cluster: Cluster) -> Check:
    """1. The user added once to PostgreSQL logs in on either node."""
    seen: dict[str, dict[str, Any]] = {}
    tried: list[dict[str, Any]] = []
    for attempt in range(ATTEMPTS):
        code, _, err = cluster.run("ftpkit ls", "client", _client("ls", f"{cluster.url}/"), stem=f"login-{attempt}")
        for session in sessions(err):
            tried.append({**session, "exit": code})
            if code == 0 and session["logged_in"]:
                seen.setdefault(session["node"], session)
        if len(seen) == len(NODES):
            break
    ok = all(seen.get(node, {}).get("announced") == NODE_PUBLIC[node] for node in NODES)
    lines = [f"{node}: logged in as alice, 227 announces {seen[node]['announced']}" if node in seen
             else f"{node}: never reached" for node in NODES]
    return Check("login-either-node", ok, [f"user alice added once (ftpkit user add --db), {len(tried)} sessions",
                                           *lines], {"sessions": tried})


def upload_download(cluster: Cluster) -> Check:
    """2. Upload through one node, download byte-exact through the other."""
    payload = cluster.workdir / "payload.bin"
    payload.write_bytes(os.urandom(PAYLOAD_SIZE))
    payload.chmod(0o644)
    code, _, err = cluster.run("ftpkit put", "client", _client("put", str(payload), f"{cluster.url}/payload.bin"))
    up = sessions(err)
    if code != 0 or not up:
        raise LabError(f"the upload failed (exit {code}): {err.strip().splitlines()[-1:] or 'no output'}")
    uploader = up[-1]["node"]
    want = _sha256(payload)
    for attempt in range(ATTEMPTS):
        target = cluster.workdir / f"download-{attempt}.bin"
        code, _, err = cluster.run("ftpkit get", "client", _client("get", f"{cluster.url}/payload.bin", "-o",
                                                                   str(target)), stem=f"get-{attempt}")
        down = sessions(err)
        if down and down[-1]["node"] != uploader:
            got = _sha256(target) if code == 0 and target.is_file() else ""
            lines = [f"uploaded {PAYLOAD_SIZE} bytes through {uploader}, downloaded through {down[-1]['node']}",
                     f"SHA-256 {want[:16]}… sent, {got[:16] or 'nothing'}… received: "
                     f"{'identical' if got == want else 'DIFFERENT'}"]
            return Check("upload-download", got == want, lines, {"uploaded_via": uploader,
                                                                 "downloaded_via": down[-1]["node"],
                                                                 "sha256_sent": want, "sha256_received": got})
    raise LabError(f"no download session reached the node other than {uploader} in {ATTEMPTS} tries")


def failover(cluster: Cluster) -> Check:
    """3. The node serving a download is killed midway; ``ftpkit get -c --retries 3`` finishes through the other."""
    payload, target = cluster.workdir / "payload.bin", cluster.workdir / "failover.bin"
    err_path = cluster.workdir / "failover.err"
    router = cluster.names["router"]
    shape(router, "to-client", THROTTLE)
    killed, at = "", 0
    try:
        with err_path.open("wb") as err:
            popen = cluster.procs.start("ftpkit get -c", cluster.names["client"],
                                        _client("get", "-c", "--retries", "3", f"{cluster.url}/payload.bin", "-o",
                                                str(target)), stdout=err, stderr=err)
        end = time.monotonic() + 60
        while not killed and popen.poll() is None and time.monotonic() < end:
            first = sessions(err_path.read_text(errors="replace"))
            at = target.stat().st_size if target.exists() else 0
            if first and at >= KILL_AFTER:
                killed = first[0]["node"]
                node = cluster.nodes[killed]
                os.kill(node.pid, signal.SIGKILL)  # by its PID: no goodbye, its connections reset
                node.wait(10)
            else:
                time.sleep(0.02)
        try:
            code: int | None = popen.wait(max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
            code = None
    finally:
        shape(router, "to-client", None)
    states = cluster.wait_states({killed: "DOWN"}, 10) if killed else {}
    if killed:
        cluster.start_node(killed)  # back for the next checks
        cluster.wait_states({node: "UP L7OK" for node in NODES})
    seen = sessions(err_path.read_text(errors="replace"))
    resumed = seen[-1] if len(seen) > 1 else {}
    got = _sha256(target) if code == 0 and target.is_file() else ""
    want = _sha256(payload)
    ok = bool(killed) and got == want and resumed.get("node") not in (None, killed) and (resumed.get("rest") or 0) > 0
    lines = [f"downloading through {killed or '?'}: SIGKILL after {at} of {PAYLOAD_SIZE} bytes; "
             f"HAProxy: {killed} {states.get(killed, '?')}",
             f"ftpkit get -c --retries 3 resumed on {resumed.get('node', 'no other node')} at REST "
             f"{resumed.get('rest')}, exit {code}: SHA-256 {'identical' if got == want else 'DIFFERENT'}"]
    return Check("failover", ok, lines, {"killed": killed, "killed_at": at, "resumed_via": resumed.get("node"),
                                         "rest": resumed.get("rest"), "exit": code, "sessions": seen,
                                         "sha256_sent": want, "sha256_received": got, "haproxy": states})


def real_address(cluster: Cluster) -> Check:
    """4. The node sees the client's own address through the balancer, and RFC 2577's PORT check holds."""
    code, out, err = cluster.run("conversation", "client", [sys.executable, "-m", "ftpkit.lab.cluster_helpers",
                                                            "conversation", BALANCER_ADDRESS, "21", USER,
                                                            PASSWORD, SERVICES_ADDRESS])
    if code != 0:
        raise LabError(f"the raw conversation failed (exit {code}): {err.strip().splitlines()[-1:]}")
    said = json.loads(out)
    greeted = _BANNER.match("<-- " + said["greeting"])
    node = greeted.group(1) if greeted else "?"
    logged = [line for n in NODES for line in cluster.node_logs[n].read_text(errors="replace").splitlines()
              if f"connect from {CLIENT_ADDRESS}:" in line and f"via {BALANCER_ADDRESS}" in line]
    sees = said["whoami"].split(" ", 1)[1] if " " in said["whoami"] else ""
    refused = said["port_third"][:1] == "5"
    ok = sees.split(" ")[0] == CLIENT_ADDRESS and refused and bool(logged)
    lines = [f"through the balancer {node} sees the client at {sees or '?'} (SITE WHOAMI; the client is "
             f"{said['local']})",
             f"PORT {SERVICES_ADDRESS},… (a third host) → {said['port_third']}",
             f"the nodes logged {len(logged)} connections from {CLIENT_ADDRESS} via {BALANCER_ADDRESS}"]
    return Check("real-client-address", ok, lines, {**said, "node": node, "logged": len(logged)})


def doctor(cluster: Cluster) -> Check:
    """5. The doctor against the balancer, with node2's passive range dropped by node2's own firewall."""
    low, high = NODE_PASSIVE["node2"]
    iptables(cluster.names["node2"], ["-A", "INPUT", "-p", "tcp", "--dport", f"{low}:{high}", "-j", "DROP"])
    per_node: dict[str, dict[str, Any]] = {}
    for attempt in range(ATTEMPTS):
        code, out, err = cluster.run("ftpkit doctor", "client", [*FTPKIT, "doctor", "--json", "--mode", "passive",
                                                                 "--timeout", "1", "--lang", "en", f"{cluster.url}/"],
                                     stem=f"doctor-{attempt}")
        try:
            report = json.loads(out)
        except ValueError:
            raise LabError(f"the doctor exited {code} without a report: {err.strip().splitlines()[-1:]}") from None
        greeting = _BANNER.match("<-- " + str(report["control"]["greeting"]))
        if greeting is None:
            continue
        pasv = [p for p in report["passive"] if p["method"] == "PASV"]
        per_node.setdefault(greeting.group(1), {
            "announced": pasv[0]["announced"].rsplit(":", 1)[0] if pasv and pasv[0]["announced"] else None,
            "passive_ok": any(p["ok"] for p in pasv),
            "direct": pasv[0]["direct"] if pasv else None, "substituted": pasv[0]["substituted"] if pasv else None,
            "codes": sorted({f["code"] for f in report["findings"]}),
            "server_sees": report["control"]["server_sees"]})
        if len(per_node) == len(NODES):
            break
    good, bad = per_node.get("node1", {}), per_node.get("node2", {})
    ok = (good.get("passive_ok") is True and good.get("announced") == NODE_PUBLIC["node1"]
          and bad.get("passive_ok") is False and bad.get("announced") == NODE_PUBLIC["node2"])
    lines = [f"iptables in node2: DROP tcp dport {low}:{high} (its passive range)"]
    for node in NODES:
        seen = per_node.get(node)
        lines.append(f"{node}: never reached" if seen is None else
                     f"{node}: 227 announces {seen['announced']}, connecting there: {seen['direct']}"
                     + (f" (the balancer's address instead: {seen['substituted']})"
                        if seen["substituted"] not in (None, "not-tried") else "")
                     + f"; passive {'works' if seen['passive_ok'] else 'FAILS'}; doctor's findings: "
                     f"{', '.join(seen['codes']) or '-'}")
    return Check("doctor-per-node", ok, lines, {"nodes": per_node})


STEPS: tuple[Callable[[Cluster], Check], ...] = (logins, upload_download, failover, real_address, doctor)


def run_all(cluster: Cluster) -> list[Check]:
    out: list[Check] = []
    for step in STEPS:
        try:
            out.append(step(cluster))
        except LabError as exc:
            out.append(Check(step.__name__.replace("_", "-"), False, [str(exc)]))
    return out
