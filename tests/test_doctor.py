"""`ftpkit doctor` against servers on loopback: healthy, and each failure it must name with its evidence."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ftpkit.client import Client, ClientOptions
from ftpkit.client.url import parse_url
from ftpkit.doctor import DoctorOptions, run_doctor
from scriptedftp import dropping_listener, scripted_server

FTPKIT = [sys.executable, "-m", "ftpkit"]


def doctor(url: str, **options) -> object:
    return asyncio.run(run_doctor(parse_url(url), DoctorOptions(**{"timeout": 2.0, **options})))


def codes(report) -> list[str]:
    return [f.code for f in report.findings]


def status(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


@contextmanager
def fake_server(greeting: bytes | None) -> Iterator[int]:
    """A TCP server on loopback that sends ``greeting`` (or nothing) to each connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if greeting:
                conn.sendall(greeting)
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in held:
            conn.close()


def test_client_and_doctor_read_feat_alike():
    """Feature names are case-insensitive (RFC 2389): the client and the doctor read the same list from one codec."""
    feat = b"211-Features:\r\n mlst type*;size*;modify*;\r\n utf8\r\n Epsv\r\n ftpkit-probe WHOAMI\r\n211 End\r\n"
    with scripted_server({"FEAT": feat}) as (port, received):
        with Client(ClientOptions(timeout=2.0)) as ftp:
            ftp.connect("127.0.0.1", port)
            ftp.login("joe", "x")
            client_features = ftp.features()
            client_sent = list(received)
        received.clear()
        report = doctor(f"ftp://joe:x@127.0.0.1:{port}/", modes=("passive",))
    assert client_features == {"MLST": "type*;size*;modify*;", "UTF8": "", "EPSV": "", "FTPKIT-PROBE": "WHOAMI"}
    assert "OPTS UTF8 ON" in client_sent
    features = next(c for c in report.checks if c.name == "features")
    assert (features.status, features.params["feat"], features.params["utf8"]) == \
        ("pass", "MLST UTF8 EPSV FTPKIT-PROBE", "True")
    assert "OPTS UTF8 ON" in received and "SITE WHOAMI" in received
    assert report.facts.probe_offered


def test_healthy_ftpkit_server(server):
    report = doctor(f"ftp://127.0.0.1:{server.port}/")
    assert codes(report) == ["healthy"]
    assert report.healthy and report.seconds < 1.0  # loopback: well under a second
    st = status(report)
    assert [st[n] for n in ("resolve", "control", "greeting", "login", "features", "epsv", "pasv", "eprt", "port")] \
        == ["pass"] * 9
    assert report.facts.server_sees == "127.0.0.1"  # SITE WHOAMI
    pasv = next(c for c in report.checks if c.name == "pasv")
    port = report.facts.passive[1].announced.port
    assert pasv.params["computation"] == f"{port >> 8}*256+{port & 255} = {port}"
    assert any(line.startswith("<-- 227 Entering Passive Mode (127,0,0,1,") for line in pasv.sequence)
    assert report.facts.active[1].server_received == report.facts.active[1].sent  # no NAT helper here


def test_control_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connecting is refused
        report = doctor(f"ftp://127.0.0.1:{port}/")
    assert codes(report) == ["control-refused"]
    assert status(report)["greeting"] == "skipped"


def test_control_dropped():
    with dropping_listener() as port:
        report = doctor(f"ftp://127.0.0.1:{port}/", timeout=0.3)
    assert codes(report) == ["control-timeout"]
    control = next(c for c in report.checks if c.name == "control")
    assert control.sequence == [f"=== connect 127.0.0.1:{port} -> timeout"]


def test_not_ftp():
    with fake_server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n") as port:
        report = doctor(f"ftp://127.0.0.1:{port}/")
    assert codes(report) == ["not-ftp"]
    assert "SSH-2.0-OpenSSH_9.2p1" in report.findings[0].summary("en")


def test_no_greeting():
    with fake_server(None) as port:
        report = doctor(f"ftp://127.0.0.1:{port}/", timeout=0.3)
    assert codes(report) == ["no-greeting"]


def test_server_busy(servers, tree):
    busy = servers.start(tree, max_sessions=1)
    holder = socket.create_connection(("127.0.0.1", busy.port))
    assert holder.recv(100).startswith(b"220")
    report = doctor(f"ftp://127.0.0.1:{busy.port}/")
    holder.close()
    assert codes(report) == ["server-busy"]


def test_login_failed(server):
    report = doctor(f"ftp://alice:wrong@127.0.0.1:{server.port}/")
    assert codes(report) == ["login-failed"]
    assert "530" in report.findings[0].params["reply"]


def test_passive_address_mismatch_and_active_refused(servers, tree):
    nat = servers.start(tree, masquerade_address="127.0.0.9")
    report = doctor(f"ftp://127.0.0.1:{nat.port}/", active_address="127.0.0.2")
    assert codes(report) == ["passive-address-mismatch", "active-refused"]
    st = status(report)
    assert (st["epsv"], st["pasv"], st["eprt"], st["port"]) == ("pass", "warn", "fail", "fail")
    pasv = report.facts.passive[1]
    assert (pasv.announced.host, pasv.direct, pasv.substituted) == ("127.0.0.9", "refused", "ok")
    assert pasv.classification == "other-host"
    assert report.findings[1].params["reply"].startswith("501")


@pytest.mark.parametrize(("announced", "peer", "code"), [
    # a node behind a load balancer: its 227 names the node; the balancer dialled has no passive ports
    ("198.18.3.12", "198.18.2.2", "passive-data-timeout"),
    # a private address seen from elsewhere: what a client meets is the peer's address (clients substitute it)
    ("10.0.0.5", "9.9.9.9", "passive-data-refused"),  # (no traffic: facts only; 203.0.113.0/24 counts as private)
])
def test_a_failed_passive_connection_is_named_by_the_address_that_matters(announced: str, peer: str, code: str):
    from ftpkit.doctor.diagnose import passive_findings
    from ftpkit.doctor.model import Facts, PassiveProbe
    from ftpkit.protocol.hostport import HostPort, classify_announced

    probe = PassiveProbe("PASV", "227 Entering Passive Mode", 227, HostPort(announced, 50150),
                         classify_announced(announced, peer), direct="timeout", substituted="refused")
    findings = passive_findings(Facts("lb.example", 21, "alice", peer=peer, passive=[probe]))
    failure = findings[-1]
    assert failure.code == code
    assert f"connect {announced}:50150 -> timeout" in failure.evidence  # both tries, each with its own address
    assert f"connect {peer}:50150 -> refused" in failure.evidence


def test_active_connect_failure_is_named(servers, tree):
    # the server accepts a foreign address, connects there and fails: nobody listens on 127.0.0.3
    lax = servers.start(tree, allow_foreign_addresses=True, data_connect_timeout=1)
    report = doctor(f"ftp://127.0.0.1:{lax.port}/", active_address="127.0.0.3", modes=("active",))
    assert codes(report) == ["active-data-timeout"]
    assert report.facts.active[0].list_reply.startswith("425")
    assert status(report)["epsv"] == "skipped"


def test_cli_json_and_exit_codes(server, servers, tree):
    ok = subprocess.run([*FTPKIT, "doctor", "--json", f"ftp://127.0.0.1:{server.port}/"], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["healthy"] is True and data["summary"] == {"control": "ok", "passive": "ok", "active": "ok"}
    assert [f["code"] for f in data["findings"]] == ["healthy"]
    assert {c["name"] for c in data["checks"]} >= {"epsv", "pasv", "eprt", "port"}
    bad = subprocess.run([*FTPKIT, "doctor", "--lang", "ja", f"ftp://alice:nope@127.0.0.1:{server.port}/"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "ログインに失敗しました" in bad.stdout and "ユーザー名とパスワードを確認してください" in bad.stdout
    usage = subprocess.run([*FTPKIT, "doctor", "gopher://x"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1


def test_language_follows_lang(server):
    env = {"LANG": "ja_JP.UTF-8", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([*FTPKIT, "doctor", f"ftp://127.0.0.1:{server.port}/"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0 and "まとめ" in result.stdout and "問題は見つかりませんでした" in result.stdout


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_every_detail_key_is_in_the_catalog(lang):
    import re
    from pathlib import Path

    from ftpkit.diagnosis import catalog

    source = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "src/ftpkit/doctor").glob("*.py"))
    keys = set(re.findall(r'say\("(?:pass|warn|fail|skipped)", (?:f?)"([a-z0-9-]+)"', source))
    keys |= {"control-refused", "control-timeout", "control-error", "skipped-earlier"}
    table = catalog(lang).data["details"]
    assert keys and keys <= set(table), keys - set(table)
