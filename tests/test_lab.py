"""`ftpkit lab`: every scenario for real in network namespaces — the transfer outcome of each mode, the doctor's
codes, the analyzer's codes and the ftpkit server's own codes — and nothing left behind afterwards (no namespace, no
process, the host's interfaces and firewall untouched).
The same transfer outcomes with vsftpd, pyftpdlib, curl and lftp.

Needs root (network namespaces, iptables inside them, tcpdump); CI runs as root. Without root these tests skip,
except the ones that check the table itself and the refusal without privileges.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import IN_CI, require_peer
from ftpkit.diagnosis import CODES, catalog
from ftpkit.lab import (
    HANDS_ON,
    SCENARIOS,
    TRUSTING,
    LabError,
    LabOptions,
    lab_namespaces,
    names_for_run,
    peers,
    run_scenario,
    runner,
)
from ftpkit.lab.processes import namespace_pids
from ftpkit.lab.scenarios import ACTIVE, PASSIVE
from ftpkit.lab.topology import ROLES, interfaces, privilege_problem, teardown

FTPKIT = [sys.executable, "-m", "ftpkit"]
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root to create network namespaces "
                                                       "(CI runs the tests as root)")
PROBE_CODES = frozenset({"nat-detected", "alg-rewrote-port"})  # need SITE WHOAMI/LASTPORT: ftpkit servers only


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _host_state() -> tuple[str, frozenset[str]]:
    """The host's own firewall (counters stripped) and interfaces, read only."""
    rules = ""
    if shutil.which("iptables-save"):
        out = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=20, check=False).stdout
        rules = "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines() if not line.startswith("#"))
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=20, check=False)
    names = frozenset(line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines() if ":" in line)
    return rules, names


@pytest.fixture
def lab_tools() -> None:
    require_peer("tcpdump")
    require_peer("iptables")
    require_peer("ip")


@pytest.fixture
def host_untouched(lab_tools: None) -> Iterator[None]:
    """Nothing of the lab is left afterwards and the host's interfaces and firewall are as they were."""
    before = _host_state()
    yield
    assert lab_namespaces(names_for_run()) == [], "lab namespaces left behind"
    assert _host_state() == before, "the host's interfaces or firewall changed"


def assert_nothing_left(report: runner.LabReport) -> None:
    assert lab_namespaces(report.names) == []
    assert report.started, "the lab started no process?"
    assert [pid for pid in report.started if _alive(pid)] == []


def outcomes(report: runner.LabReport) -> dict[str, bool]:
    return {t.row: t.ok for t in report.transfers}


def expected_outcomes(name: str, client: str = "ftpkit") -> dict[str, bool]:
    scenario = SCENARIOS[name]
    return {row: peers.expected(scenario, row, client) for row in scenario.rows((ACTIVE, PASSIVE))}


# --- the table itself (no root needed) ------------------------------------------------------------------------------
def test_scenarios_are_described_in_both_languages_and_use_known_codes():
    assert list(SCENARIOS) == ["open", "client-firewall", "client-firewall-helper", "server-firewall",
                               "server-firewall-wrong-range", "client-nat", "client-nat-helper",
                               "client-nat-helper-tls", "server-nat", "server-nat-masquerade"]
    for name, scenario in SCENARIOS.items():
        for lang in ("en", "ja"):
            table = catalog(lang).data["lab"]
            assert table.get(f"{name}-summary") and table.get(f"{name}-explanation"), (lang, name)
        assert scenario.doctor <= CODES and scenario.analyzer <= CODES and scenario.server_side <= CODES, name
        assert set(scenario.works) >= {ACTIVE, PASSIVE}, name
    assert catalog("ja").text("lab", "client-firewall-summary") != catalog("en").text("lab", "client-firewall-summary")


def test_rules_run_inside_lab_namespaces_and_name_only_lab_addresses():
    lab_net = ipaddress.ip_network("198.18.0.0/15")
    names = names_for_run(4242)
    assert names.all == ("ftpkit-lab4242-client", "ftpkit-lab4242-router", "ftpkit-lab4242-server")
    assert HANDS_ON.all == ("ftpkit-client", "ftpkit-router", "ftpkit-server")
    for iface in interfaces(names, published=True):
        assert iface.namespace in names.all
        for address in iface.address.split(", "):
            assert ipaddress.ip_interface(address).network.subnet_of(lab_net), address
    for scenario in SCENARIOS.values():
        for rule in scenario.rules:
            assert rule.namespace(names) in names.all
            assert rule.argv[0] == "iptables"
            for word in rule.args:
                for candidate in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", word):
                    assert ipaddress.ip_network(candidate, strict=False).subnet_of(lab_net), (scenario.name, word)
    helpers = {name for name, s in SCENARIOS.items() if any("--helper" in r.args for r in s.rules)}
    assert helpers == {"client-firewall-helper", "client-nat-helper", "client-nat-helper-tls"}
    assert [name for name, s in SCENARIOS.items() if s.tls] == ["client-nat-helper-tls"]


def test_lab_list_names_every_scenario():
    done = subprocess.run([*FTPKIT, "lab", "list"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    for name, scenario in SCENARIOS.items():
        assert re.search(rf"^{re.escape(name)}\s+{re.escape(scenario.summary('en')[:30])}", done.stdout, re.M), name
    ja = subprocess.run([*FTPKIT, "lab", "list", "--lang", "ja"], capture_output=True, text=True, timeout=30,
                        check=False)
    assert "パッシブ" in ja.stdout


def test_privileges_needed():
    assert privilege_problem(euid=0) is None
    assert privilege_problem(euid=1000, caps=(1 << 12) | (1 << 21)) is None  # CAP_NET_ADMIN + CAP_SYS_ADMIN
    assert privilege_problem(euid=1000, caps=0) is not None
    assert privilege_problem(euid=1000, caps=1 << 12) is not None  # `ip netns add` mounts: CAP_SYS_ADMIN too


@pytest.mark.parametrize("args", [["run", "open"], ["up", "open"], ["down"], ["exec", "client", "--", "true"]])
def test_without_privileges_one_line_and_exit_2(args: list[str], monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]):
    if os.geteuid() != 0:  # really without privileges: the real command
        done = subprocess.run([*FTPKIT, "lab", *args], capture_output=True, text=True, timeout=30, check=False)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:  # as root: the command as a process without privileges would see it
        from ftpkit.cli import lab as lab_cli
        from ftpkit.cli import main

        monkeypatch.setattr(lab_cli, "privilege_problem", lambda: privilege_problem(euid=1000, caps=0))
        with pytest.raises(SystemExit) as exited:
            main(["lab", *args])
        code = exited.value.code
        out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.strip().splitlines() == [
        "ftpkit lab: needs root (or CAP_NET_ADMIN) to create network namespaces; run it with sudo"]
    assert out == ""
    assert lab_namespaces(HANDS_ON) == [] or os.geteuid() != 0


# --- every scenario, for real ---------------------------------------------------------------------------------------
@NEEDS_ROOT
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_with_ftpkit(name: str, host_untouched: None):
    scenario = SCENARIOS[name]
    began = time.monotonic()
    report = run_scenario(scenario, LabOptions())
    took = time.monotonic() - began
    assert_nothing_left(report)
    assert outcomes(report) == scenario.works, [t.error for t in report.transfers]
    assert report.as_expected
    assert report.doctor_error == "" and report.analyzer_error == ""
    assert report.doctor_codes == scenario.doctor
    assert report.analyzer_codes == scenario.analyzer, _unexpected(report, scenario.analyzer)
    assert report.server_codes == scenario.server_side  # what the server classified alone, from its log
    for t in report.transfers:  # a failure names the connection, the mode and the reply
        if not t.ok:
            assert t.error.startswith("ftpkit: data connection ("), t.error
            assert f"({'active' if t.row == ACTIVE else 'passive'} mode, " in t.error
    # within a few seconds plus the data timeouts (2 s; clients 3 s; the doctor 1 s per step)
    assert took < 15, took


@NEEDS_ROOT
def test_where_the_analyzer_sees_each_nat(host_untouched: None):
    """client-nat: the private PORT address is a mismatch on the server's side of the router only; server-nat: the
    private 227 address is a mismatch on the client's side only; with the masquerade address, the public 227 address
    is one on the server's side only."""
    report = run_scenario(SCENARIOS["client-nat"], LabOptions(doctor=False))
    sides = {(f["side"], f["code"]) for f in report.analyzer["findings"]}
    assert ("server-side", "port-address-mismatch") in sides
    assert ("client-side", "port-address-mismatch") not in sides
    assert ("both", "nat-detected") in sides
    report = run_scenario(SCENARIOS["server-nat"], LabOptions(doctor=False, modes=(PASSIVE,)))
    assert outcomes(report) == {PASSIVE: True, TRUSTING: False}
    sides = {(f["side"], f["code"]) for f in report.analyzer["findings"]}
    assert ("client-side", "pasv-address-mismatch") in sides
    assert ("server-side", "pasv-address-mismatch") not in sides
    assert_nothing_left(report)
    report = run_scenario(SCENARIOS["server-nat-masquerade"], LabOptions(doctor=False, modes=(PASSIVE,)))
    assert outcomes(report) == {PASSIVE: True, TRUSTING: True}
    assert {(f["side"], f["code"]) for f in report.analyzer["findings"]} == {("server-side", "pasv-address-mismatch")}
    assert_nothing_left(report)


LIVE_SCENARIOS = ["client-firewall", "server-firewall-wrong-range", "client-nat", "client-nat-helper", "server-nat"]


def _unexpected(report: runner.LabReport, expected: frozenset[str]) -> list[dict]:
    """The analyzer's findings whose codes were not expected, with their evidence: what a failure shows (a rare
    extra finding cannot be told from its code alone)."""
    return [f for f in (report.analyzer or {}).get("findings", []) if f["code"] not in expected]


def _without_indexes(findings: list[dict]) -> list[tuple]:
    """Findings as compared between the files and live: session numbers (``#3``) aside, which count differently."""
    return sorted((f["code"], f["severity"], f["side"], f["session"], json.dumps(f["params"], sort_keys=True),
                   tuple(re.sub(r"#\d+ ", "#N ", e) for e in f["evidence"])) for f in findings)


@NEEDS_ROOT
@pytest.mark.parametrize("name", LIVE_SCENARIOS)
def test_live_analyzer_on_the_router_finds_what_the_capture_files_show(name: str, host_untouched: None):
    """``--live``: ftpkit analyze --live on the router's two interfaces while real clients fail; its findings are
    those of the analysis of the router's capture files, side by side, NAT pairs included."""
    scenario = SCENARIOS[name]
    report = run_scenario(scenario, LabOptions(doctor=False, live=True))
    assert_nothing_left(report)
    assert outcomes(report) == scenario.works, [t.error for t in report.transfers]
    live = report.live
    assert live is not None and live["error"] is None and live["stopped"] == "interrupted"
    assert live["dropped"] == 0 and all(i["packets"] > 0 for i in live["interfaces"])
    assert report.live_codes == report.analyzer_codes == scenario.analyzer
    assert live["differences"] == []
    assert _without_indexes(live["findings"]) == _without_indexes(report.analyzer["findings"])


@NEEDS_ROOT
def test_run_live_in_the_terminal_and_json(host_untouched: None):
    done = subprocess.run([*FTPKIT, "lab", "run", "client-firewall", "--live", "--no-doctor"], capture_output=True,
                          text=True, timeout=90, check=False, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.index("Analyzer, on the captures") < out.index("Live analyzer, on the router") < out.index(
        "the same findings as the analysis of the capture files")
    assert "[data-syn-unanswered]" in out[out.index("Live analyzer"):]
    done = subprocess.run([*FTPKIT, "lab", "run", "client-firewall", "--live", "--no-doctor", "--json"],
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    live = json.loads(done.stdout)["live"]
    assert live["codes"] == ["data-syn-unanswered", "transfer-failed"] and live["differences"] == []
    assert [i["name"] for i in live["interfaces"]] == ["to-client", "to-server"]


@NEEDS_ROOT
@pytest.mark.peer
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_with_vsftpd_same_outcomes(name: str, host_untouched: None):
    require_peer("vsftpd")
    scenario = SCENARIOS[name]
    report = run_scenario(scenario, LabOptions(server="vsftpd"))
    assert_nothing_left(report)
    assert outcomes(report) == scenario.works, [t.error for t in report.transfers]
    # the doctor finds the same problems; proving a NAT needs SITE WHOAMI/LASTPORT, which vsftpd does not have
    assert report.doctor_codes == (scenario.doctor - PROBE_CODES or {"healthy"})
    # the capture tells the same story whoever the server is
    assert report.analyzer_codes == scenario.analyzer, _unexpected(report, scenario.analyzer)
    assert report.server_codes is None  # only ftpkit classifies what it sees


@NEEDS_ROOT
@pytest.mark.peer
@pytest.mark.parametrize("server", ["pyftpdlib"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_with_pyftpdlib_same_outcomes(name: str, server: str, host_untouched: None):
    why = peers.server_missing(server)
    if why:
        (pytest.fail if IN_CI else pytest.skip)(why)
    why = peers.server_missing(server, SCENARIOS[name].tls)
    if why:
        pytest.skip(why)  # pyOpenSSL is no dependency of the test suite
    report = run_scenario(SCENARIOS[name], LabOptions(server=server, doctor=False))
    assert_nothing_left(report)
    assert outcomes(report) == SCENARIOS[name].works, [t.error for t in report.transfers]
    assert report.analyzer_codes == SCENARIOS[name].analyzer, _unexpected(report, SCENARIOS[name].analyzer)


@NEEDS_ROOT
@pytest.mark.peer
@pytest.mark.parametrize("client", ["curl", "lftp"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_with_other_clients(name: str, client: str, host_untouched: None):
    require_peer(client)
    report = run_scenario(SCENARIOS[name], LabOptions(client=client, doctor=False, analyze=False))
    assert_nothing_left(report)
    assert outcomes(report) == expected_outcomes(name, client), [t.error for t in report.transfers]
    for t in report.transfers:
        if not t.ok:
            assert t.error, t.output[-500:]


def test_lftp_trusts_the_227_address_here():
    """lftp is the client that trusts the private 227 address of server-nat (its ftp:fix-pasv-address replaces only
    addresses it takes for private ones, and 198.18.0.0/15 is not among them): its plain passive row fails there."""
    assert expected_outcomes("server-nat", "lftp") == {ACTIVE: True, PASSIVE: False, TRUSTING: False}
    assert expected_outcomes("server-nat", "curl") == {ACTIVE: True, PASSIVE: True, TRUSTING: False}
    assert expected_outcomes("server-nat-masquerade", "lftp") == {ACTIVE: True, PASSIVE: True, TRUSTING: True}


# --- the commands ---------------------------------------------------------------------------------------------------
@NEEDS_ROOT
def test_run_json_and_capture_files(host_untouched: None, tmp_path: Path):
    base = tmp_path / "lab.pcap"
    done = subprocess.run([*FTPKIT, "lab", "run", "client-firewall", "--json", "--capture", str(base),
                           "--no-doctor"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scenario"]["name"] == "client-firewall" and report["as_expected"] is True
    assert {t["row"]: t["ok"] for t in report["transfers"]} == {ACTIVE: False, PASSIVE: True}
    assert [r["command"] for r in report["scenario"]["rules"]][-1] == "iptables -A INPUT -j DROP"
    used = {i["namespace"] for i in report["topology"]}
    assert len(used) == 3 and all(re.fullmatch(r"ftpkit-lab\d+-(client|router|server)", n) for n in used), used
    assert used.isdisjoint(lab_namespaces()), "the run's namespaces are left"
    assert "data-syn-unanswered" in report["analyzer"]["codes"]
    assert report["server_diagnosis"]["codes"] == ["active-data-timeout"]
    assert report["server_diagnosis"]["as_expected"] is True
    assert report["scenario"]["expected"]["server"] == ["active-data-timeout"]
    kept = [tmp_path / "lab-client-side.pcap", tmp_path / "lab-server-side.pcap"]
    assert report["captures"] == [str(p) for p in kept]
    analyzed = subprocess.run([*FTPKIT, "analyze", "--json", *map(str, kept)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert analyzed.returncode == 1, analyzed.stderr  # findings
    assert json.loads(analyzed.stdout)["summary"]["sessions"] == 4  # two sessions, seen on both sides


@NEEDS_ROOT
def test_run_terminal_report_shows_everything_side_by_side(host_untouched: None):
    done = subprocess.run([*FTPKIT, "lab", "run", "client-nat"], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    out = re.sub(r"ftpkit-lab\d+-", "ftpkit-lab<PID>-", done.stdout)
    for text in ("ftpkit-lab<PID>-client  eth0      198.18.1.2/24", "to-server 198.19.1.1/24",
                 "ftpkit-lab<PID>-router# iptables -t nat -A POSTROUTING -s 198.18.1.0/24 -o to-server -j MASQUERADE",
                 "501 PORT refused", "[nat-detected]", "[active-refused]", "[port-address-mismatch]",
                 "Reproduced as expected"):
        assert text in out, text
    assert out.index("Rules in force") < out.index("Transfers") < out.index("Doctor") < out.index("Analyzer") \
        < out.index("Server, its own diagnosis")
    server_part = out[out.index("Server, its own diagnosis"):]
    assert "[port-address-mismatch]" in server_part and "198.19.1.1" in server_part


@NEEDS_ROOT
def test_up_exec_down(host_untouched: None, tmp_path: Path):
    if lab_namespaces(HANDS_ON):
        pytest.skip(f"a hands-on lab is up already (someone is experimenting): {lab_namespaces(HANDS_ON)}")
    done = subprocess.run([*FTPKIT, "lab", "up", "client-firewall"], capture_output=True, text=True, timeout=60,
                          check=False)
    server_pids: list[int] = []
    try:
        assert done.returncode == 0, done.stderr
        assert "ftpkit lab exec client" in done.stdout
        assert lab_namespaces(HANDS_ON) == sorted(HANDS_ON.all)
        server_pids = namespace_pids(HANDS_ON.server)
        assert server_pids, "no server in the server namespace"
        again = subprocess.run([*FTPKIT, "lab", "up", "open"], capture_output=True, text=True, timeout=60,
                               check=False)
        assert again.returncode == 2 and "already up" in again.stderr, again.stderr
        url = "ftp://198.19.1.2/lab.txt"
        get = [*FTPKIT, "get", url, "--timeout", "3", "--no-epsv", "--no-eprt", "-o"]
        ok = subprocess.run([*FTPKIT, "lab", "exec", "client", "--", *get, str(tmp_path / "p"), "--passive"],
                            capture_output=True, text=True, timeout=60, check=False)
        assert ok.returncode == 0, ok.stderr
        assert (tmp_path / "p").read_bytes() == peers.FILE_BYTES
        bad = subprocess.run([*FTPKIT, "lab", "exec", "client", "--", *get, str(tmp_path / "a"), "--active"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert bad.returncode == 1 and "425" in bad.stderr, bad.stderr
        rules = subprocess.run([*FTPKIT, "lab", "exec", "client", "iptables-save"], capture_output=True, text=True,
                               timeout=60, check=False)
        assert "-A INPUT -j DROP" in rules.stdout
        # a run meanwhile has namespaces of its own: it neither collides with nor disturbs the hands-on lab
        report = run_scenario(SCENARIOS["open"], LabOptions(doctor=False, analyze=False))
        assert outcomes(report) == {ACTIVE: True, PASSIVE: True}
        assert lab_namespaces(HANDS_ON) == sorted(HANDS_ON.all)
    finally:
        down = subprocess.run([*FTPKIT, "lab", "down"], capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    assert "ftpkit-client" in down.stdout
    assert lab_namespaces(HANDS_ON) == []
    assert [pid for pid in server_pids if _alive(pid)] == []
    twice = subprocess.run([*FTPKIT, "lab", "down"], capture_output=True, text=True, timeout=60, check=False)
    assert twice.returncode == 0 and "no lab namespace" in twice.stdout
    gone = subprocess.run([*FTPKIT, "lab", "exec", "client", "--", "true"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert gone.returncode == 2 and "no lab is up" in gone.stderr


@NEEDS_ROOT
def test_down_removes_the_leftovers_of_a_killed_run_but_not_a_running_one(lab_tools: None):
    if lab_namespaces(HANDS_ON):
        pytest.skip(f"a hands-on lab is up (someone is experimenting): {lab_namespaces(HANDS_ON)}")
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead, alive = names_for_run(ended.pid), names_for_run()  # our own PID: a run in progress
    holder = None
    dead_files = Path(tempfile.mkdtemp(prefix=f"ftpkit-{dead.tag}-"))  # the work folder of the killed run
    alive_files = Path(tempfile.mkdtemp(prefix=f"ftpkit-{alive.tag}-"))
    try:
        subprocess.run(["ip", "netns", "add", dead.router], check=True, timeout=20)
        subprocess.run(["ip", "netns", "add", alive.router], check=True, timeout=20)
        holder = subprocess.Popen(["ip", "netns", "exec", dead.router, "sleep", "60"])
        deadline = time.monotonic() + 10
        while holder.pid not in namespace_pids(dead.router) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the process is inside; bounded
        assert holder.pid in namespace_pids(dead.router)
        done = subprocess.run([*FTPKIT, "lab", "down"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert dead.router in done.stdout and alive.router in done.stdout  # removed; left alone (named as such)
        assert holder.wait(10) == -signal.SIGKILL
        assert dead.router not in lab_namespaces() and alive.router in lab_namespaces()
        assert not dead_files.exists() and alive_files.is_dir()
    finally:
        shutil.rmtree(dead_files, ignore_errors=True)
        shutil.rmtree(alive_files, ignore_errors=True)
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait(10)
        for name in (dead.router, alive.router):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20, check=False)
    assert lab_namespaces(dead) == lab_namespaces(alive) == []


@NEEDS_ROOT
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_cleans_up(sig: signal.Signals, host_untouched: None):
    """Ctrl-C (or SIGTERM) while a transfer hangs: everything is removed, exit 130."""
    proc = subprocess.Popen([*FTPKIT, "lab", "run", "client-firewall", "--timeout", "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    names = names_for_run(proc.pid)
    inside: list[int] = []
    transfer: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while not transfer and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # polling the condition "a transfer runs in the client namespace", bounded
            transfer = [pid for pid in namespace_pids(names.client) if " get " in _cmdline(pid)]
        inside = [pid for role in ROLES for pid in namespace_pids(names[role])]
        assert transfer, f"no transfer was ever started: {proc.poll()}"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        leftovers = lab_namespaces(names)
        teardown(leftovers)  # only if the test fails
        for stale in Path(tempfile.gettempdir()).glob(f"ftpkit-{names.tag}-*"):
            shutil.rmtree(stale, ignore_errors=True)
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err
    assert leftovers == []
    assert [pid for pid in inside if _alive(pid)] == []


@NEEDS_ROOT
def test_a_failure_while_building_still_cleans_up(host_untouched: None, monkeypatch: pytest.MonkeyPatch):
    def broken(*args: object, **kwargs: object) -> peers.ServerCommand:
        return peers.ServerCommand(["sh", "-c", "echo 'bind: nothing here'; exit 3"])

    monkeypatch.setattr(peers, "server_command", broken)
    with pytest.raises(LabError, match=r"the server exited with code 3: bind: nothing here"):
        run_scenario(SCENARIOS["server-nat"], LabOptions())
    assert lab_namespaces(names_for_run()) == []


def test_display_command_reads_like_a_person_typed_it():
    from ftpkit.lab.report import display_command

    argv = ["ip", "netns", "exec", "ftpkit-client", sys.executable, "-m", "ftpkit", "doctor", "ftp://198.19.1.2/"]
    assert display_command(argv) == "ip netns exec ftpkit-client ftpkit doctor ftp://198.19.1.2/"
    assert shlex.split(display_command(["lftp", "-c", "set a b; get x"]))[2] == "set a b; get x"


def test_a_transfer_that_runs_too_long_is_stopped_and_reported():
    slow = subprocess.Popen(["sleep", "30"])
    quick = subprocess.Popen(["true"])
    started = time.monotonic()
    rows = [runner.Running("slow", [], slow, Path("/x"), Path("/y"), started),
            runner.Running("quick", [], quick, Path("/x"), Path("/y"), started)]
    runner._wait_for(rows, limit=0.3)
    assert time.monotonic() - started < 5
    assert slow.returncode == -signal.SIGKILL and rows[0].ended is None
    assert quick.returncode == 0 and rows[1].ended is not None and rows[1].ended - started < 1
