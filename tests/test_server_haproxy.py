"""Two ftpkit nodes behind a real HAProxy (send-proxy-v2, FTP health checks), on loopback: the client connects to
the balancer from 127.0.0.2 (or .3), so whether a node sees the client or the balancer (127.0.0.1) is observable.
Both nodes serve the same folder, each with a passive range of its own; data connections go straight to a node."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import RunningServer, ServerThread, require_peer
from ftpkit.protocol.hostport import HostPort, format_port
from ftpkit.server.config import validate
from haproxy import HAProxy, readme_config
from rawftp import Raw

CLIENT = "127.0.0.2"
OTHER_CLIENT = "127.0.0.3"
BALANCER_ELSEWHERE = "127.0.0.5"


class Records(logging.Handler):
    """The server's log records, with a way to wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.records), timeout)


@dataclass
class Cluster:
    nodes: list[RunningServer]
    lb: HAProxy
    records: Records
    root: Path
    opened: list[Raw] = field(default_factory=list)

    def connect(self, frontend: str = "ftp", source: str = CLIENT) -> Raw:
        conn = Raw(self.lb.address(frontend), self.lb.port(frontend), source=source)
        self.opened.append(conn)
        return conn

    def close_connections(self) -> None:
        while self.opened:
            self.opened.pop().sock.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    require_peer("haproxy")
    root = tmp_path_factory.mktemp("shared")
    (root / "random.bin").write_bytes(bytes(range(256)) * 4096 + b"tail")  # 1 MiB and a bit
    (root / "hello.txt").write_bytes(b"hello\r\nworld\r\n")
    logger = logging.getLogger("ftpkit.server")
    records = Records()
    logger.addHandler(records)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    servers = ServerThread()
    try:
        nodes = [servers.start(root, users=["alice:secret"], banner=f"node{i} ready", proxy_protocol="required",
                               proxy_allowed=["127.0.0.1/32"], max_sessions_per_ip=2, login_fail_delay=0.05)
                 for i in (1, 2)]
        both = [f"node{i} 127.0.0.1:{node.port}" for i, node in enumerate(nodes, 1)]
        # "far": the balancer on another address than the nodes, as it is outside a test
        lb = HAProxy({"ftp": both, "one": both[:1], "far": both}, binds={"far": BALANCER_ELSEWHERE}).start()
        running = Cluster(nodes, lb, records, root)
        try:
            lb.wait_up()
            yield running
        finally:
            running.close_connections()
            lb.stop()
            lb.remove()
    finally:
        servers.stop_all()
        logger.removeHandler(records)
        logger.setLevel(previous)


@pytest.fixture(autouse=True)
def _close_connections(request):
    yield
    if "cluster" in request.fixturenames:
        request.getfixturevalue("cluster").close_connections()


def whoami(conn: Raw) -> str:
    conn.login()
    reply = conn.cmd("SITE WHOAMI")
    assert reply.code == 200, reply
    return reply.text


def test_nodes_see_the_real_client_and_both_are_reached(cluster: Cluster):
    banners = set()
    for _ in range(4):  # round robin
        conn = cluster.connect()
        banners.add(conn.greeting.text)
        assert whoami(conn) == f"{CLIENT} {conn.sock.getsockname()[1]}"
        conn.cmd("QUIT")
    assert banners == {"node1 ready", "node2 ready"}


def test_health_checks_are_not_logged_as_sessions(cluster: Cluster):
    def checks(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
        return [r for r in records if r.getMessage().endswith("a health check")]

    seen = len(checks(cluster.records.records))
    assert cluster.records.wait_for(lambda records: len(checks(records)) >= seen + 4), \
        "no health checks from haproxy reached the nodes"
    assert all("PROXY LOCAL from 127.0.0.1" in r.getMessage() for r in checks(cluster.records.records))
    noisy = [r.getMessage() for r in cluster.records.records
             if r.levelno >= logging.INFO and re.search(r"(?<!via )127\.0\.0\.1", r.getMessage())]
    assert not noisy  # no session, failed login or refusal at info or above for the balancer's own connections


def test_per_ip_limits_apply_to_the_real_client(cluster: Cluster):
    held = [cluster.connect("one") for _ in range(2)]  # max_sessions_per_ip = 2, on node1 alone
    assert all(conn.greeting.code == 220 for conn in held)
    third = cluster.connect("one")
    assert third.greeting.code == 421 and "from your address" in third.greeting.text
    other = cluster.connect("one", source=OTHER_CLIENT)  # the same balancer, another client
    assert other.greeting.code == 220
    for conn in (*held, other):
        conn.cmd("QUIT")


def test_rfc2577_checks_hold_through_the_balancer(cluster: Cluster):
    conn = cluster.connect()
    conn.login()
    refused = conn.cmd(f"PORT {format_port(HostPort('127.0.0.1', 40000))}")
    assert refused.code == 501 and f"not the address of your control connection ({CLIENT})" in refused.text
    # active mode to the real client works: the node connects to 127.0.0.2 directly
    with socket.create_server((CLIENT, 0)) as listener:
        listener.settimeout(10)
        assert conn.cmd(f"PORT {format_port(HostPort(CLIENT, listener.getsockname()[1]))}").code == 200
        conn.send("RETR hello.txt")
        data_conn, _ = listener.accept()
        with data_conn:
            assert conn.reply().code == 150
            received = b""
            while chunk := data_conn.recv(65536):
                received += chunk
        assert received == b"hello\r\nworld\r\n" and conn.reply().code == 226
    # passive: only the real client may connect to the node's data port
    host, port = conn.pasv()
    assert host == "127.0.0.1"  # the node's own address: data does not go through the balancer
    conn.send("RETR hello.txt")
    with socket.create_connection((host, port), timeout=10, source_address=(OTHER_CLIENT, 0)) as stranger:
        stranger.settimeout(10)
        assert stranger.recv(1) == b""  # closed by the node: not the control connection's client
        with socket.create_connection((host, port), timeout=10, source_address=(CLIENT, 0)) as data_conn:
            data_conn.settimeout(10)
            assert conn.reply().code == 150
            received = b""
            while chunk := data_conn.recv(65536):
                received += chunk
    assert received == b"hello\r\nworld\r\n" and conn.reply().code == 226
    conn.cmd("QUIT")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.peer
@pytest.mark.parametrize("method, frontend", [("EPSV", "ftp"), ("PASV", "ftp"), ("EPSV", "far")])
def test_curl_passive_transfers_through_haproxy(cluster: Cluster, tmp_path, method, frontend):
    curl = require_peer("curl")
    url = f"ftp://alice:secret@{cluster.lb.address(frontend)}:{cluster.lb.port(frontend)}"
    options = ["--interface", CLIENT, "-sS", "-v", "--max-time", "60"]
    if method == "PASV":
        options.append("--disable-epsv")
    if frontend == "far":
        options.append("--no-ftp-skip-pasv-ip")  # curl's default uses the control connection's address (the balancer)
    banners = set()
    for i in range(2):  # round robin: one download from each node
        out = tmp_path / f"random-{i}.bin"
        result = subprocess.run([curl, *options, "-o", str(out), f"{url}/random.bin"], capture_output=True,
                                text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        assert sha256(out) == sha256(cluster.root / "random.bin")
        banners.update(re.findall(r"< 220 (node\d) ready", result.stderr))
        if frontend == "far":  # EPSV would send curl to the balancer's address: refused, curl falls back to PASV
            assert "< 502 EPSV cannot work through the load balancer" in result.stderr
            assert "< 227 Entering Passive Mode (127,0,0,1," in result.stderr
        else:
            assert f"< {'229' if method == 'EPSV' else '227'} " in result.stderr
    assert banners == {"node1", "node2"}
    upload = tmp_path / "up.bin"
    upload.write_bytes(bytes(reversed(range(256))) * 3000)
    name = f"uploaded-{method}-{frontend}.bin"
    for _ in range(2):  # up through one node, down through the other
        result = subprocess.run([curl, *options, "-T", str(upload), f"{url}/{name}"], capture_output=True,
                                text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        back = tmp_path / "back.bin"
        result = subprocess.run([curl, *options, "-o", str(back), f"{url}/{name}"], capture_output=True,
                                text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        assert sha256(back) == sha256(upload) == sha256(cluster.root / name)


def test_the_readme_configurations_are_valid(tmp_path):
    """The README's HAProxy configuration passes `haproxy -c` as written; its node configuration is valid."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(readme_config())
    check = subprocess.run([require_peer("haproxy"), "-c", "-f", str(config)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    node = readme.split("### Running several nodes", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    values = tomllib.loads(node)["server"]
    values["root"] = str(tmp_path)  # /srv/ftp is not here
    cfg = validate(values)
    assert cfg.proxy_protocol == "required" and cfg.masquerade_address == "203.0.113.11"
