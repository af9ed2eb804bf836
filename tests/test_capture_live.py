"""``ftpkit analyze --live`` for real: tcpdump started by the analyzer inside network namespaces of the test's own
(``ftpkit-test-live-<pid>-...``, a veth pair on 198.18.7.0/24), real clients failing through a client firewall,
and the live findings compared with the analysis of a capture file of the same traffic. Ctrl-C reports the
sessions still open; a missing capture tool or a missing capability is one line and exit 2.

Everything started here is stopped by its PID; every wait is bounded and polls a condition.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from capturelab import ftpkit_server, netns, ns_prefix, run, stop
from conftest import require_peer
from ftpkit.capture import analyze
from ftpkit.capture.model import Report

pytestmark = [pytest.mark.peer]
SRC = Path(__file__).resolve().parent.parent / "src"
ENV = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{Path(__file__).parent}"}
CLIENT, SERVER = "198.18.7.2", "198.18.7.1"
FTPKIT = [sys.executable, "-m", "ftpkit"]


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("capturing and creating network namespaces needs root")


@contextmanager
def veth_pair() -> Iterator[tuple[str, str]]:
    """Two namespaces, client and server, joined by a veth pair created inside them; deleted afterwards."""
    base = f"ftpkit-test-live-{os.getpid()}-{time.monotonic_ns() % 100000}"
    client, server = f"{base}-c", f"{base}-s"
    try:
        for ns in (client, server):
            run(["ip", "netns", "add", ns], check=True)
            run(["ip", "link", "set", "lo", "up"], ns, check=True)
        run(["ip", "-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", server],
            check=True)
        for ns, address in ((client, CLIENT), (server, SERVER)):
            run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"], ns, check=True)
            run(["ip", "link", "set", "eth0", "up"], ns, check=True)
        yield client, server
    finally:
        for ns in (client, server):
            run(["ip", "netns", "del", ns])


class Live:
    """``ftpkit analyze --live`` as a process: started, ready when it says it captures, stopped by SIGINT."""

    def __init__(self, ns: str | None, args: list[str], out: Path) -> None:
        self.out = out
        self.stdout = out.open("wb")
        self.proc = subprocess.Popen([*ns_prefix(ns), *FTPKIT, "analyze", "--live", *args], stdout=self.stdout,
                                     stderr=subprocess.PIPE, env=ENV)
        self.said = b""
        assert self.proc.stderr is not None
        end = time.monotonic() + 20
        while b"capturing on" not in self.said:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                stop(self.proc)
                raise AssertionError(f"the live analyzer did not start: {self.said!r}")
            if select.select([self.proc.stderr], [], [], left)[0]:
                self.said += os.read(self.proc.stderr.fileno(), 4096)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def wait_for(self, condition: Callable[[list[dict[str, Any]]], bool], deadline: float = 20.0) -> None:
        """Until ``condition(events)`` holds (the JSON lines written so far), polled every 20 ms."""
        end = time.monotonic() + deadline
        while not condition(self.events()):
            if time.monotonic() > end or self.proc.poll() is not None:
                raise AssertionError(f"not seen within {deadline} s: {self.out.read_text()[-2000:]}")
            time.sleep(0.02)

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        self.stdout.close()
        return self.proc.returncode, (self.said + err).decode(errors="replace")


@contextmanager
def file_capture(path: Path, ns: str, iface: str, marker_from: str) -> Iterator[None]:
    """tcpdump into ``path`` beside the live analyzer; at the end, until a marker datagram sent from
    ``marker_from`` to the server's discard port is in the file (so every packet before it is too)."""
    proc = subprocess.Popen([*ns_prefix(ns), require_peer("tcpdump"), "-i", iface, "-n", "-s", "0", "-U",
                             "--immediate-mode", "-w", str(path), "tcp or (udp and dst port 9)"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    said, end = b"", time.monotonic() + 15
    while b"listening on" not in said:
        if time.monotonic() > end or proc.poll() is not None:
            stop(proc)
            raise AssertionError(f"tcpdump did not start: {said!r}")
        if select.select([proc.stderr], [], [], 0.5)[0]:
            said += os.read(proc.stderr.fileno(), 4096)
    try:
        yield
        marker = f"ftpkit-live-marker-{time.monotonic_ns()}"
        code = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto({marker.encode()!r}, " \
               f"({SERVER!r}, 9))"
        end = time.monotonic() + 10
        while marker.encode() not in path.read_bytes():
            assert time.monotonic() < end, "tcpdump did not write the marker"
            run([sys.executable, "-c", code], marker_from, check=True)
            time.sleep(0.05)
    finally:
        stop(proc, signal.SIGINT)


def findings_by_client(report: Report) -> dict[str, list[dict[str, Any]]]:
    return {str(s.client): [f.to_json("en") for f in s.findings] for s in report.sessions if s.commands()}


def live_findings(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for e in events:
        if e["event"] == "session" and any(x["side"] == "client" for x in e["session"]["log"]):
            s = e["session"]
            out[f"{s['client']['ip']}:{s['client']['port']}"] = s["findings"]
    return out


@pytest.fixture
def served(tmp_path: Path) -> Path:
    need_root()
    for peer in ("tcpdump", "ip", "iptables"):
        require_peer(peer)
    folder = tmp_path / "srv"
    folder.mkdir()
    (folder / "file.bin").write_bytes(os.urandom(300_000))
    for p in (tmp_path, folder):
        p.chmod(0o755)
    return folder


def test_live_findings_equal_the_file_analysis_while_clients_fail_in_a_client_firewall(served: Path,
                                                                                       tmp_path: Path) -> None:
    """The client drops inbound new connections (as the lab's client-firewall): active mode fails, passive works.
    The live analyzer on the server's interface reports each data connection's fate before its session ends, and
    the findings of every session equal those of the capture file of the same traffic (and of its own --write)."""
    with veth_pair() as (cns, sns):
        for rule in (["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                     ["-A", "INPUT", "-p", "tcp", "--syn", "-j", "DROP"]):
            run(["iptables", "-w", *rule], cns, check=True)
        server = [*FTPKIT, "serve", str(served), "--host", SERVER, "--port", "21", "--passive-ports", "50000-50009",
                  "--data-connect-timeout", "2", "--data-accept-timeout", "2", "--login-fail-delay", "0"]
        srv = subprocess.Popen(ns_prefix(sns) + server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=ENV)
        try:
            wait = (f"import socket,time\nend=time.monotonic()+15\nwhile True:\n try:\n  socket.create_connection("
                    f"({SERVER!r},21),1).close();break\n except OSError:\n  assert time.monotonic()<end\n"
                    "  time.sleep(0.02)")
            run([sys.executable, "-c", wait], cns, check=True)
            pcap, written = tmp_path / "file.pcap", tmp_path / "live.pcap"
            with file_capture(pcap, sns, "eth0", cns):
                live = Live(sns, ["-i", "eth0", "--json", "--write", str(written)], tmp_path / "live.jsonl")
                try:
                    clients = [
                        [*FTPKIT, "get", "--timeout", "3", "-o", str(tmp_path / "a"), f"ftp://{SERVER}/file.bin"],
                        [*FTPKIT, "get", "--active", "--no-eprt", "--timeout", "3", "-o", str(tmp_path / "b"),
                         f"ftp://{SERVER}/file.bin"],
                        [*FTPKIT, "ls", "--active", "--timeout", "3", f"ftp://{SERVER}/"],
                    ]
                    codes = [run(argv, cns, env=ENV).returncode for argv in clients]
                    assert codes == [0, 1, 1]
                    live.wait_for(lambda ev: len(live_findings(ev)) == 3)
                finally:
                    code, said = live.interrupt()
        finally:
            stop(srv)
    assert code == 0, said
    events = live.events()
    summary = events[-1]
    assert summary["event"] == "summary" and summary["stopped"] == "interrupted" and summary["dropped"] == 0
    assert events[0]["event"] == "capture-started" and events[0]["interfaces"] == ["eth0"]
    from_file = findings_by_client(analyze([pcap]))
    ours = live_findings(events)
    assert ours == from_file
    assert findings_by_client(analyze([written])) == from_file
    codes_seen = sorted({f["code"] for fs in ours.values() for f in fs})
    assert codes_seen == ["data-syn-unanswered", "transfer-failed"]
    # each data connection's fate came before its session's report
    for client, findings in ours.items():
        index = next(e["session"]["index"] for e in events if e["event"] == "session"
                     and f"{e['session']['client']['ip']}:{e['session']['client']['port']}" == client)
        fates = [(i, e["fate"]) for i, e in enumerate(events) if e["event"] == "connection" and e["session"] == index]
        ended = next(i for i, e in enumerate(events) if e["event"] == "session" and e["session"]["index"] == index)
        assert fates and all(i < ended for i, _ in fates)
        expected = "syn-unanswered" if findings else "established"
        assert fates[-1][1] == expected, (client, fates)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_reports_the_sessions_still_open_and_exits_0(served: Path, tmp_path: Path, as_json: bool) -> None:
    holder = ("import sys\nfrom rawftp import Raw\nraw = Raw('127.0.0.1', 2121)\n"
              "assert raw.cmd('USER anonymous').code == 331 and raw.cmd('PASS x').code == 230\n"
              "print('ready', flush=True)\nsys.stdin.read()\nraw.cmd('QUIT')\n")
    with netns() as ns, ftpkit_server(served, 2121, "50000-50009", ns=ns):
        live = Live(ns, ["-i", "lo", "--port", "2121", *(["--json"] if as_json else [])], tmp_path / "out")
        client = subprocess.Popen([*ns_prefix(ns), sys.executable, "-c", holder], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=ENV)
        try:
            assert client.stdout is not None and client.stdout.readline() == b"ready\n"
            if as_json:
                live.wait_for(lambda ev: any(e["event"] == "session-started" for e in ev))
            else:
                end = time.monotonic() + 20
                while "control connection" not in live.out.read_text():
                    assert time.monotonic() < end, live.out.read_text()
                    time.sleep(0.02)
            code, said = live.interrupt()
        finally:
            client.communicate(b"", timeout=20)
    assert code == 0, said
    if as_json:
        events = live.events()
        (still,) = [e for e in events if e["event"] == "session"]
        assert still["open"] is True and still["reason"] == "capture-end"
        assert [x.get("ftp.response.code") for x in still["session"]["log"] if x["side"] == "server"] == [220, 331, 230]
        assert events[-1]["event"] == "summary" and events[-1]["stopped"] == "interrupted"
    else:
        text = live.out.read_text()
        head, _, tail = text.partition("Still open when the capture stopped:")
        assert tail, text
        assert "USER anonymous" in tail and "230 Login successful" in tail and "Session 1" in tail
        assert "session 1 ended" not in head


def test_a_missing_capture_tool_is_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([*FTPKIT, "analyze", "--live", "-i", "lo"], capture_output=True, text=True, timeout=60,
                          env={**ENV, "PATH": str(empty)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["ftpkit analyze: --live needs tcpdump or dumpcap on PATH, and neither is "
                                        "there (on Debian: apt install tcpdump)"]
    done = subprocess.run([*FTPKIT, "analyze", "--live", "--capture-tool", "dumpcap"], capture_output=True, text=True,
                          timeout=60, env={**ENV, "PATH": str(empty)})
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "dumpcap" in done.stderr


@pytest.mark.parametrize("tool", ["tcpdump", "dumpcap"])
def test_without_the_capture_capability_one_line_and_exit_2(tool: str) -> None:
    """Without the capabilities (root drops every one with setpriv; an interpreter under root's pyenv home stays
    readable, which it would not be to the user nobody): the tool cannot open a packet socket."""
    require_peer(tool)
    argv = [*FTPKIT, "analyze", "--live", "-i", "lo", "--capture-tool", tool]
    if os.geteuid() == 0:
        argv = [require_peer("setpriv"), "--bounding-set=-all", "--inh-caps=-all", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV)
    if os.geteuid() != 0 and done.returncode == 0:
        pytest.skip(f"this user may capture with {tool}")
    assert done.returncode == 2 and done.stdout == "", done.stdout
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"ftpkit analyze: capturing on lo needs the CAP_NET_RAW and CAP_NET_ADMIN capabilities: "
                           f"run it as root, or give them to {tool} (setcap cap_net_raw,cap_net_admin=eip "), line
    assert f"; {tool} said: " in line and "permission" in line.lower()


def test_an_unanswered_syn_is_reported_after_the_syn_timeout_before_the_server_gives_up(served: Path,
                                                                                          tmp_path: Path) -> None:
    """The server tries its active connection for 8 s; the live analyzer says after --syn-timeout 2 s (its clock
    moves with the wall clock while nothing is captured) that the SYN is unanswered, long before the 425."""
    with netns() as ns:
        run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "40100:40109", "--tcp-flags", "SYN,ACK,RST", "SYN",
             "-j", "DROP"], ns, check=True)
        with ftpkit_server(served, 2121, "50000-50009", "--data-connect-timeout", "8", ns=ns):
            live = Live(ns, ["-i", "lo", "--port", "2121", "--syn-timeout", "2", "--json"], tmp_path / "out")
            try:
                got = run([*FTPKIT, "get", "--active", "--no-eprt", "--active-ports", "40100-40109", "--timeout",
                           "12", "-o", str(tmp_path / "x"), "ftp://127.0.0.1:2121/file.bin"], ns, env=ENV)
                assert got.returncode == 1
                live.wait_for(lambda ev: any(e["event"] == "session" and e["session"]["transfers"] for e in ev))
            finally:
                code, said = live.interrupt()
    assert code == 0, said
    events = live.events()
    (decided,) = [e for e in events if e["event"] == "connection"]
    (session,) = [e["session"] for e in events if e["event"] == "session" and e["session"]["transfers"]]
    (transfer,) = session["transfers"]
    assert (decided["fate"], decided["decided_by"], decided["method"]) == ("syn-unanswered", "timeout", "PORT")
    syn = decided["data"]["syn_time"]
    final = next(x["time"] for x in session["log"] if x.get("ftp.response.code") == 425)
    assert decided["time"] == syn + 2 and decided["time"] < final - 5
    assert decided["data"]["retransmissions"] >= 1 and transfer["fate"] == "syn-unanswered"
    assert transfer["data"]["retransmissions"] > decided["data"]["retransmissions"]  # more came after the notice


@pytest.mark.parametrize("blocked", [False, True], ids=["clean", "passive-blocked"])
def test_duration_stops_by_itself_with_the_exit_code_of_a_file_analysis(served: Path, tmp_path: Path,
                                                                        blocked: bool) -> None:
    """``--duration``: the capture ends on its own (no signal), says so in the summary, and exits as ``analyze
    FILE`` does: 0 when nothing was found, 1 when a data connection failed (passive SYNs dropped by the server's
    firewall)."""
    with netns() as ns:
        if blocked:
            run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "50000:50009", "--tcp-flags", "SYN,ACK,RST",
                 "SYN", "-j", "DROP"], ns, check=True)
        with ftpkit_server(served, 2121, "50000-50009", ns=ns):
            live = Live(ns, ["-i", "lo", "--port", "2121", "--syn-timeout", "2", "--duration", "12", "--json"],
                        tmp_path / "out")
            try:
                got = run([*FTPKIT, "get", "--passive", "--timeout", "4", "-o", str(tmp_path / "x"),
                           "ftp://127.0.0.1:2121/file.bin"], ns, env=ENV)
                assert got.returncode == (1 if blocked else 0), got.stderr
                _, err = live.proc.communicate(timeout=60)  # no signal: --duration ends it
            finally:
                stop(live.proc)
                live.stdout.close()
    said = (live.said + err).decode(errors="replace")
    events = live.events()
    assert events[-1]["event"] == "summary" and events[-1]["stopped"] == "duration", events[-1:]
    (session,) = [e for e in events if e["event"] == "session"]
    codes = {f["code"] for f in session["session"]["findings"]}
    if blocked:
        assert live.proc.returncode == 1, said
        assert codes, session
    else:
        assert live.proc.returncode == 0, said
        assert not codes, session
        assert (tmp_path / "x").read_bytes() == (served / "file.bin").read_bytes()
