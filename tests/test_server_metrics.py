"""Metrics and health: real scrapes over HTTP of a running server while real clients (curl, lftp) transfer in both
modes; the counters against what was done; ``promtool check metrics`` on the scraped text; ``/healthz`` 200, then
503 while ``ftpkit serve`` shuts down; a load balancer's TCP probe is neither an info-level session nor a failed
login; the server's diagnosis in the reply, the log (a ``diagnosis`` field in JSON) and a metric label."""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunningServer, passive_range, require_peer
from ftpkit.logs import JsonFormatter
from ftpkit.protocol.hostport import parse_pasv
from rawftp import Raw, read_all

FTPKIT = [sys.executable, "-m", "ftpkit"]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str) -> tuple[int, str]:
    try:
        with NO_PROXY.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Scrape:
    """One scrape of ``/metrics``: its text and its samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)


def scrape(server: RunningServer) -> Scrape:
    metrics = server.server.metrics_server
    assert metrics is not None
    status, text = http_get(f"{metrics.url}/metrics")
    assert status == 200
    return Scrape(text)


def until(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Poll ``condition`` (each poll is a real scrape or a look at real state) until it holds; bounded."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:g} s: {what}")
        time.sleep(0.01)


def promtool_check(text: str) -> None:
    done = subprocess.run([require_peer("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    out = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out.update(HOME=str(home), LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="dumb")
    return out


def run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv[0]} exit {done.returncode}: {done.stderr[-2000:]}"


@pytest.mark.peer
def test_scrapes_while_curl_and_lftp_transfer_in_both_modes(servers, tree, tmp_path, env):
    curl, lftp = require_peer("curl"), require_peer("lftp")
    server = servers.start(tree, users=["alice:secret"], metrics_address="127.0.0.1:0")
    first = scrape(server)
    assert first.value("ftpkit_sessions_open") == 0 and first.total("ftpkit_transfers_total") == 0
    assert first.value("ftpkit_accepting") == 1
    assert first.value("ftpkit_passive_ports") == 20
    size = (tree / "random.bin").stat().st_size
    upload = tmp_path / "up.bin"
    upload.write_bytes(os.urandom(300_000))
    url = f"{server.url}/random.bin"
    # curl: a download in each mode and an upload in passive mode
    run([curl, "-sS", "--user", "alice:secret", url, "-o", str(tmp_path / "c-passive")], env)
    run([curl, "-sS", "--user", "alice:secret", "--ftp-port", "127.0.0.1", url, "-o", str(tmp_path / "c-active")], env)
    run([curl, "-sS", "--user", "alice:secret", "-T", str(upload), f"{server.url}/curl-up.bin"], env)
    # a scrape while a session holds a passive port: what is open now
    holder = Raw(server.host, server.port)
    holder.login()
    holder.pasv()
    during = scrape(server)
    assert during.value("ftpkit_sessions_open") == 1 and during.value("ftpkit_passive_ports_in_use") == 1
    holder.cmd("QUIT")
    # lftp: an upload and a download in active mode
    script = (f"set net:max-retries 1; set net:timeout 10; set ftp:ssl-allow no; set xfer:clobber on; "
              f"set ftp:passive-mode off; open -u alice,secret -p {server.port} {server.host}; "
              f"put {upload} -o lftp-up.bin; get random.bin -o {tmp_path / 'l-active'}")
    run([lftp, "-c", script], env)
    until(lambda: scrape(server).value("ftpkit_sessions_open") == 0, "every session ended")
    after = scrape(server)
    assert all((tmp_path / name).read_bytes() == (tree / "random.bin").read_bytes()
               for name in ("c-passive", "c-active", "l-active"))
    assert (tree / "curl-up.bin").read_bytes() == (tree / "lftp-up.bin").read_bytes() == upload.read_bytes()
    assert after.value("ftpkit_transfers_total", direction="download", mode="passive", result="ok") == 1
    assert after.value("ftpkit_transfers_total", direction="download", mode="active", result="ok") == 2
    assert after.value("ftpkit_transfers_total", direction="upload", mode="passive", result="ok") == 1
    assert after.value("ftpkit_transfers_total", direction="upload", mode="active", result="ok") == 1
    assert after.total("ftpkit_transfers_total", result="failed") == 0
    assert after.value("ftpkit_transfer_bytes_total", direction="download") == 3 * size
    assert after.value("ftpkit_transfer_bytes_total", direction="upload") == 2 * upload.stat().st_size
    assert after.value("ftpkit_transfer_duration_seconds_count", direction="download") == 3
    assert after.value("ftpkit_logins_total", result="ok", reason="user") == 5
    assert after.value("ftpkit_sessions_total", result="logged_in") == 5
    assert after.total("ftpkit_logins_total", result="failed") == 0
    assert after.value("ftpkit_password_verifications_total", method="hashed") == 1  # then cached
    assert after.value("ftpkit_password_verifications_total", method="cached") == 4
    assert after.value("ftpkit_passive_ports_in_use") == 0
    promtool_check(after.text)


def test_diagnosis_in_the_reply_the_log_and_a_metric_label(servers, tree, caplog):
    caplog.set_level(logging.INFO, logger="ftpkit.server")
    server = servers.start(tree, users=["alice:secret"], metrics_address="127.0.0.1:0", data_accept_timeout=0.3)
    c = Raw(server.host, server.port)
    c.login()
    # PORT naming another address than the control connection's: both addresses, the cause, passive mode
    reply = c.cmd("PORT 127,0,0,2,156,64")
    assert reply.code == 501
    assert "127.0.0.2" in reply.text and "127.0.0.1" in reply.text and "NAT" in reply.text
    assert "passive mode" in reply.text and "\n" not in reply.text
    # an active data connection refused: nothing listens on the announced port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    assert c.cmd(f"PORT 127,0,0,1,{closed >> 8},{closed & 255}").code == 200
    reply = c.cmd("RETR hello.txt")
    assert reply.code == 425 and "refused" in reply.text and "passive mode" in reply.text
    # a passive port nobody connects to
    c.pasv()
    reply = c.cmd("RETR hello.txt")
    assert reply.code == 425 and "within 0.3 s" in reply.text and "firewall" in reply.text
    # ... and one where a connection from another address was refused meanwhile
    _, port = c.pasv()
    knock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
    assert read_all(knock) == b""  # closed by the server
    reply = c.cmd("RETR hello.txt")
    assert reply.code == 425 and "127.0.0.2" in reply.text
    # a passive connection that works, then one that does not: the 227 address is the one clients cannot use
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send("RETR hello.txt")
    assert c.reply().code == 150 and read_all(data) == b"hello\r\nworld\r\n" and c.reply().code == 226
    c.pasv()
    reply = c.cmd("RETR hello.txt")
    assert reply.code == 425 and "EPSV" in reply.text
    records = [r for r in caplog.records if getattr(r, "diagnosis", None)]
    codes = [r.diagnosis["code"] for r in records]  # type: ignore[attr-defined]
    assert codes == ["port-address-mismatch", "active-data-refused", "passive-data-timeout",
                     "passive-foreign-source", "masquerade-missing"]
    assert all(r.levelno == logging.WARNING for r in records)
    text = records[0].getMessage()
    assert "[port-address-mismatch]" in text and "on the client side: Use passive mode." in text
    as_json = json.loads(JsonFormatter().format(records[1]))
    assert as_json["diagnosis"]["code"] == "active-data-refused" and as_json["diagnosis"]["mode"] == "active"
    assert as_json["diagnosis"]["advice"][0]["side"] == "client"
    # the transfer is recorded just after its reply
    until(lambda: scrape(server).value("ftpkit_transfers_total", direction="download", mode="passive",
                                       result="failed") == 3, "the failed transfers counted")
    m = scrape(server)
    assert m.value("ftpkit_data_connection_failures_total", mode="active", code="port-address-mismatch") == 1
    assert m.value("ftpkit_data_connection_failures_total", mode="active", code="active-data-refused") == 1
    assert m.value("ftpkit_data_connection_failures_total", mode="passive", code="passive-data-timeout") == 1
    assert m.value("ftpkit_data_connection_failures_total", mode="passive", code="masquerade-missing") == 1
    assert m.value("ftpkit_diagnoses_total", mode="passive", code="passive-foreign-source") == 1
    assert m.value("ftpkit_transfers_total", direction="download", mode="active", result="failed") == 1
    # the repeat summary: one line per client network for what repeated (here nothing twice)... then twice
    c.pasv()
    assert c.cmd("RETR hello.txt").code == 425
    server.loop.call_soon_threadsafe(server.server.shared.events.flush_summary)
    until(lambda: any("diagnosis summary" in r.getMessage() for r in caplog.records), "the summary line")
    lines = [r.getMessage() for r in caplog.records if "diagnosis summary" in r.getMessage()]
    assert lines == ["diagnosis summary: [masquerade-missing] 1 client(s) from 127.0.0.0/24 could not use the private "
                     "address in the 227 reply (2 times in 60 s): masquerade_address missing?"]
    c.cmd("QUIT")


def test_a_tcp_health_probe_is_no_info_line_and_no_failed_login(servers, tree, caplog):
    caplog.set_level(logging.DEBUG, logger="ftpkit.server")
    server = servers.start(tree, users=["alice:secret"], metrics_address="127.0.0.1:0")
    for i in range(5):  # a load balancer's TCP check: connect, close (some with a reset, as with unread data)
        probe = socket.create_connection((server.host, server.port), timeout=10)
        if i % 2:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        probe.close()
    until(lambda: scrape(server).value("ftpkit_sessions_total", result="probe") == 5, "five probes counted")
    m = scrape(server)
    assert m.total("ftpkit_logins_total") == 0 and m.value("ftpkit_sessions_open") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
    assert any("end of session" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert server.server.shared.defender.events == {}  # nothing scored against the prober
    # a real session is logged at info level
    c = Raw(server.host, server.port)
    c.login()
    c.cmd("QUIT")
    until(lambda: scrape(server).value("ftpkit_sessions_total", result="logged_in") == 1, "the session counted")
    assert any("end of session alice@127.0.0.1" in r.getMessage() for r in caplog.records
               if r.levelno == logging.INFO)


def test_failed_logins_and_refusals_are_counted_by_reason(servers, tree):
    server = servers.start(tree, users=["alice:secret"], metrics_address="127.0.0.1:0", anonymous=False,
                           max_sessions_per_ip=2)
    c = Raw(server.host, server.port)
    assert c.cmd("USER alice").code == 331 and c.cmd("PASS wrong").code == 530
    assert c.cmd("USER anonymous").code == 331 and c.cmd("PASS x@y").code == 530
    other = Raw(server.host, server.port)
    third = socket.create_connection((server.host, server.port), timeout=10)
    assert read_all(third).startswith(b"421 ")  # the per-address limit
    m = scrape(server)
    assert m.value("ftpkit_logins_total", result="failed", reason="credentials") == 1
    assert m.value("ftpkit_logins_total", result="failed", reason="anonymous_disabled") == 1
    assert m.value("ftpkit_refused_connections_total", reason="limit") == 1
    c.cmd("QUIT")
    other.cmd("QUIT")


def test_metrics_http_answers_only_what_it_serves(servers, tree):
    server = servers.start(tree, metrics_address="127.0.0.1:0")
    metrics = server.server.metrics_server
    assert metrics is not None and metrics.host == "127.0.0.1"
    assert http_get(f"{metrics.url}/nothing")[0] == 404
    with socket.create_connection((metrics.host, metrics.port), timeout=10) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 405 ")
    with socket.create_connection((metrics.host, metrics.port), timeout=10) as sock:
        sock.sendall(b"garbage\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 400 ")
    status, body = http_get(f"{metrics.url}/healthz")
    assert status == 200 and body.startswith("ok")


def _start_serve(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], int, str]:
    proc = subprocess.Popen([*FTPKIT, "serve", "--port", "0", "--passive-ports", passive_range(), *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=20):
        proc.kill()
        raise AssertionError("ftpkit serve printed nothing within 20 s")
    line = proc.stdout.readline()
    match = re.search(r"ftp://127\.0\.0\.1:(\d+)/.*metrics at (http://\S+)/metrics", line)
    assert match, line
    return proc, int(match.group(1)), match.group(2)


def test_healthz_200_then_503_while_ftpkit_serve_shuts_down(tree, tmp_path):
    big = tree / "big.bin"
    big.write_bytes(os.urandom(32 << 20))
    proc, port, base = _start_serve(["--metrics-address", "127.0.0.1:0", "--shutdown-grace", "60",
                                     "--defender-file", str(tmp_path / "bans.json")], tree)
    try:
        assert http_get(f"{base}/healthz")[0] == 200
        # a transfer that cannot end (the client reads nothing) keeps the server in its shutdown grace
        busy = Raw("127.0.0.1", port)
        busy.login("anonymous", "x@y")
        announced = parse_pasv(busy.cmd("PASV").text)
        data = socket.socket()
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data.connect((announced.host, announced.port))
        busy.send("RETR big.bin")
        assert busy.reply().code == 150
        idle = Raw("127.0.0.1", port)
        idle.login("anonymous", "x@y")
        proc.send_signal(signal.SIGTERM)
        assert idle.reply().code == 421  # the shutdown has begun
        status, body = http_get(f"{base}/healthz")
        assert status == 503 and "shutting down" in body
        status, text = http_get(f"{base}/metrics")
        assert status == 200 and Scrape(text).value("ftpkit_accepting") == 0
        data.close()  # the transfer breaks: the last session ends, the server exits
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_periodic_summary_line_from_ftpkit_serve(tree, tmp_path):
    proc, port, _ = _start_serve(["--metrics-address", "127.0.0.1:0", "--diagnosis-summary-interval", "2",
                                  "--data-accept-timeout", "0.2", "--defender-file", str(tmp_path / "bans.json"),
                                  "--log-format", "json"], tree)
    try:
        c = Raw("127.0.0.1", port)
        c.login("anonymous", "x@y")
        for _ in range(4):  # within 1 s: one 2-second window holds two of them at least
            c.cmd("EPSV")
            assert c.cmd("RETR hello.txt").code == 425
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        summary = None
        while summary is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            record = json.loads(line) if line.startswith("{") else {}
            summary = record.get("diagnosis_summary")
        assert summary is not None and re.fullmatch(
            r"\[passive-data-timeout\] 1 client\(s\) from 127\.0\.0\.0/24 never connected to their passive port "
            r"\([234] times in 2 s\): server firewall, passive range not forwarded, or a wrong masquerade address\?",
            summary), summary
        c.cmd("QUIT")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_a_passive_port_nobody_connects_to_is_diagnosed_when_it_expires(servers, tree, caplog):
    """A client that connects before it sends RETR (ftpkit, the doctor) gives up without a transfer command: the
    listener's expiry is the server's only sight of the failure."""
    server = servers.start(tree, users=["alice:secret"], metrics_address="127.0.0.1:0", data_accept_timeout=0.2)
    c = Raw(server.host, server.port)
    c.login()
    c.epsv()
    until(lambda: scrape(server).value("ftpkit_data_connection_failures_total", mode="passive",
                                       code="passive-data-timeout") == 1, "the expiry diagnosed")
    assert any(getattr(r, "diagnosis", {}).get("code") == "passive-data-timeout" and "nobody connected" in
               r.getMessage() for r in caplog.records)
    assert c.cmd("NOOP").code == 200  # nothing was said to the client: no command waited
    c.cmd("QUIT")


def test_tls_failures_and_bans_are_counted(servers, tree, tmp_path):
    from ftpkit.cli.cert import write_self_signed

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed("127.0.0.1", cert, key, days=1)
    server = servers.start(tree, users=["alice:secret"], metrics_address="127.0.0.1:0", tls="optional",
                           tls_cert=str(cert), tls_key=str(key), defender_allow=["192.0.2.0/24"],
                           defender_threshold=6, max_login_failures=10)
    c = Raw(server.host, server.port)
    assert c.cmd("AUTH TLS").code == 234
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not a TLS handshake
    assert c.closed_by_server()
    guesser = Raw(server.host, server.port, source="127.0.0.2")
    for _ in range(2):  # 3 points each: the threshold
        assert guesser.cmd("USER alice").code == 331
        guesser.cmd("PASS wrong")
    refused = socket.create_connection((server.host, server.port), timeout=10, source_address=("127.0.0.2", 0))
    assert read_all(refused).startswith(b"421 Your address is banned")
    until(lambda: scrape(server).value("ftpkit_refused_connections_total", reason="banned") == 1, "the refusal")
    m = scrape(server)
    assert m.value("ftpkit_tls_handshake_failures_total", connection="control", reason="protocol") == 1
    assert m.value("ftpkit_bans_total") == 1 and m.value("ftpkit_bans_active") == 1
    assert m.value("ftpkit_sessions_total", result="banned") == 1
    assert m.value("ftpkit_logins_total", result="failed", reason="credentials") == 2


def test_a_metrics_address_in_use_is_one_line(tree, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([*FTPKIT, "serve", "--port", "0", "--metrics-address", f"127.0.0.1:{port}",
                               "--defender-file", str(tmp_path / "bans.json")], cwd=tree, capture_output=True,
                              text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"ftpkit serve: cannot listen on 127.0.0.1:{port} (metrics_address): Address already in use"]
    bad = subprocess.run([*FTPKIT, "serve", "--metrics-address", "localhost:x"], cwd=tree, capture_output=True,
                         text=True, timeout=30, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "ftpkit serve: metrics_address: 'localhost' is not an IP address"
