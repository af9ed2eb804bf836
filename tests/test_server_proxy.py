"""The PROXY protocol on the control listener: in-process servers and raw sockets that send exact headers, from
loopback sources of their own (127.0.0.1 is the allowed balancer, 127.0.0.3 a host that is not)."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess

import pytest

from ftpkit.protocol.hostport import HostPort, format_port
from ftpkit.protocol.proxyproto import format_v1, format_v2
from ftpkit.protocol.replies import ReplyReader
from ftpkit.server.config import ConfigError, validate
from rawftp import Raw
from test_cli_serve import FTPKIT, start_serve, stop

BALANCER = "127.0.0.1"
STRANGER = "127.0.0.3"
CLIENT = ("203.0.113.7", 40001)  # what the balancer says the client is


OPENED: list[Raw] = []


@pytest.fixture(autouse=True)
def _close_connections():
    yield
    while OPENED:
        OPENED.pop().sock.close()


def raw(*args, **kwargs) -> Raw:
    conn = Raw(*args, **kwargs)
    OPENED.append(conn)
    return conn


class Proxied(Raw):
    """A control connection that sends ``header`` (bytes, possibly in several writes) before the greeting."""

    def __init__(self, port: int, *parts: bytes, source: str = BALANCER, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        OPENED.append(self)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = "127.0.0.1"
        self.reader = ReplyReader()
        self.pending = []
        for part in parts:
            self.sock.sendall(part)
        self.greeting = self.reply()


def proxy_server(servers, tree, mode: str = "required", **settings):
    return servers.start(tree, users=["alice:secret"], proxy_protocol=mode, proxy_allowed=[f"{BALANCER}/32"],
                         **settings)


def whoami(conn: Raw) -> str:
    conn.login()
    reply = conn.cmd("SITE WHOAMI")
    assert reply.code == 200, reply
    return reply.text


def test_v1_and_v2_headers_give_the_session_the_real_client(servers, tree):
    server = proxy_server(servers, tree)
    dst = ("127.0.0.1", server.port)
    assert whoami(Proxied(server.port, format_v1(CLIENT, dst))) == "203.0.113.7 40001"
    assert whoami(Proxied(server.port, format_v2(CLIENT, dst, tlvs=((0x02, b"ftp.example"),), crc=True))) == \
        "203.0.113.7 40001"
    assert whoami(Proxied(server.port, format_v2(("2001:db8::7", 5), dst))) == "2001:db8::7 5"


def test_a_header_in_pieces_and_commands_right_behind_it(servers, tree):
    server = proxy_server(servers, tree)
    header = format_v2(CLIENT, ("127.0.0.1", server.port))
    conn = Proxied(server.port, *(header[i:i + 1] for i in range(len(header))))  # one byte per write
    assert conn.greeting.code == 220 and whoami(conn) == "203.0.113.7 40001"
    early = Proxied(server.port, format_v1(CLIENT, ("127.0.0.1", server.port)) + b"USER alice\r\nPASS secret\r\n")
    assert early.greeting.code == 220 and early.reply().code == 331 and early.reply().code == 230


def test_rfc2577_and_per_ip_limits_see_the_real_client(servers, tree):
    server = proxy_server(servers, tree, max_sessions_per_ip=1)
    dst = ("127.0.0.1", server.port)
    first = Proxied(server.port, format_v2(("127.0.0.2", 40000), dst))
    first.login()
    refused = first.cmd(f"PORT {format_port(HostPort('127.0.0.1', 40000))}")
    assert refused.code == 501 and "not the address of your control connection (127.0.0.2)" in refused.text
    assert first.cmd(f"PORT {format_port(HostPort('127.0.0.2', 40000))}").code == 200
    same_client = Proxied(server.port, format_v2(("127.0.0.2", 40001), dst))
    assert same_client.greeting.code == 421 and "from your address" in same_client.greeting.text
    other_client = Proxied(server.port, format_v2(("127.0.0.4", 40000), dst))  # the same balancer, another client
    assert other_client.greeting.code == 220


def test_the_masquerade_map_sees_the_real_client(servers, tree):
    server = proxy_server(servers, tree, masquerade_map={"203.0.113.0/24": "198.51.100.99"})
    from_map = Proxied(server.port, format_v2(CLIENT, ("127.0.0.1", server.port)))
    from_map.login()
    assert from_map.pasv()[0] == "198.51.100.99"  # the client's network, not the balancer's
    elsewhere = Proxied(server.port, format_v2(("192.0.2.8", 1), ("127.0.0.1", server.port)))
    elsewhere.login()
    assert elsewhere.pasv()[0] == "127.0.0.1"


def test_bans_fall_on_the_real_client_not_on_the_balancer(servers, tree, tmp_path):
    server = proxy_server(servers, tree, defender_threshold=3, defender_file=str(tmp_path / "bans.json"))
    dst = ("127.0.0.1", server.port)
    guesser = Proxied(server.port, format_v2(CLIENT, dst))
    assert guesser.cmd("USER alice").code == 331
    assert guesser.cmd("PASS wrong").code == 421  # one failed login scores 3: banned
    again = Proxied(server.port, format_v2((CLIENT[0], 40002), dst))
    assert again.greeting.code == 421 and "banned" in again.greeting.text
    neighbour = Proxied(server.port, format_v2(("203.0.113.8", 40000), dst))  # the same balancer, another client
    assert neighbour.greeting.code == 220 and whoami(neighbour) == "203.0.113.8 40000"


def test_health_checks_are_quiet(servers, tree, caplog):
    server = proxy_server(servers, tree)
    caplog.set_level(logging.DEBUG, logger="ftpkit.server")
    for header in (format_v2(None, command="LOCAL"), format_v1(None)):
        check = Proxied(server.port, header)
        assert check.greeting.code == 220 and check.cmd("QUIT").code == 221
        assert check.closed_by_server()
        Proxied(server.port, header).sock.close()  # a check that only connects
    # connect and end of session are logged at debug: nothing at info and above, no failed login
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    assert "a health check" in caplog.text and "end of session" in caplog.text


def test_required_refuses_others_and_bad_headers(servers, tree, caplog):
    server = proxy_server(servers, tree, proxy_header_timeout=0.3)
    caplog.set_level(logging.INFO, logger="ftpkit.server")
    direct = raw("127.0.0.1", server.port, source=STRANGER)
    assert direct.greeting.code == 421 and "load balancer only" in direct.greeting.text
    assert f"refused {STRANGER}: not in proxy_allowed" in caplog.text
    for header, logged in ((b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "destination port b'99999' is not a port"),
                           (b"GET / HTTP/1.1\r\n\r\n", "not a PROXY protocol header"),
                           (b"PROXY TCP4 1.2.3.4", "no complete PROXY protocol header within 0.3 s (18 bytes)")):
        with pytest.raises(ConnectionError, match="closed by the server"):
            Proxied(server.port, header)  # closed without a greeting
        assert logged in caplog.text
    with pytest.raises(ConnectionError):
        Proxied(server.port)  # silent: a balancer must send its header at once
    assert "no complete PROXY protocol header within 0.3 s (0 bytes)" in caplog.text


def test_optional_takes_direct_clients_and_refuses_their_headers(servers, tree, caplog):
    server = proxy_server(servers, tree, mode="optional", proxy_header_timeout=0.3)
    caplog.set_level(logging.INFO, logger="ftpkit.server")
    direct = raw("127.0.0.1", server.port, source=STRANGER)  # greeted at once: it is not a balancer
    assert whoami(direct) == f"{STRANGER} {direct.sock.getsockname()[1]}"
    forged = raw("127.0.0.1", server.port, source=STRANGER)
    reply = forged.cmd(format_v1(CLIENT, ("127.0.0.1", server.port)))
    assert reply.code == 421 and forged.closed_by_server()
    assert f"PROXY protocol header from {STRANGER} refused: {STRANGER} is not in proxy_allowed" in caplog.text
    forged_v2 = raw("127.0.0.1", server.port, source=STRANGER)
    assert forged_v2.cmd(format_v2(CLIENT, ("127.0.0.1", server.port))).code == 421
    late = Proxied(server.port)  # an allowed source that sends no header is greeted after the timeout
    assert late.greeting.code == 220 and whoami(late) == f"{BALANCER} {late.sock.getsockname()[1]}"
    assert Proxied(server.port, format_v1(CLIENT, ("127.0.0.1", server.port))).greeting.code == 220


def test_off_ignores_no_header_silently(servers, tree, caplog):
    server = servers.start(tree, users=["alice:secret"])
    caplog.set_level(logging.INFO, logger="ftpkit.server")
    conn = raw("127.0.0.1", server.port)
    assert conn.cmd(format_v1(CLIENT, ("127.0.0.1", server.port))).code == 421
    assert f"PROXY protocol header from {BALANCER} refused: proxy_protocol is off" in caplog.text


def test_implicit_tls_behind_the_header(servers, tree, tmp_path):
    from ftpkit.cli.cert import write_self_signed

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed("127.0.0.1", cert, key, days=1)
    server = proxy_server(servers, tree, tls="implicit", tls_cert=str(cert), tls_key=str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(format_v2(CLIENT, ("127.0.0.1", server.port)) + outgoing.read())  # header and ClientHello at once
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            assert data, "closed during the handshake"
            incoming.write(data)
    sock.sendall(outgoing.read())
    greeting = b""
    while b"\r\n" not in greeting:
        try:
            greeting += tls.read(4096)
        except ssl.SSLWantReadError:
            incoming.write(sock.recv(65536))
    assert greeting.startswith(b"220 ")
    sock.close()


def test_settings(tmp_path):
    with pytest.raises(ConfigError, match=r"^proxy_allowed: proxy_protocol 'required' needs the load balancers'"):
        validate({"root": str(tmp_path), "proxy_protocol": "required"})
    with pytest.raises(ConfigError, match=r"^proxy_protocol: 'on' is not one of off, optional, required"):
        validate({"root": str(tmp_path), "proxy_protocol": "on"})
    cfg = validate({"root": str(tmp_path), "proxy_protocol": "optional", "proxy_allowed": ["10.0.0.5", "fd00::/8"]})
    assert [str(n) for n in cfg.proxy_allowed] == ["10.0.0.5/32", "fd00::/8"]
    result = subprocess.run([*FTPKIT, "serve", str(tmp_path), "--proxy-protocol", "required", "--proxy-allowed",
                             "10.0.0.5", "--proxy-allowed", "nonsense"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.strip() == (
        "ftpkit serve: proxy_allowed: 'nonsense' is not a network such as 192.0.2.0/24 or 2001:db8::/32")


def test_serve_says_it_takes_proxy_headers(tree):
    proc, _, line = start_serve(["--proxy-protocol", "required", "--proxy-allowed", "127.0.0.1",
                                 "--proxy-allowed", "10.0.0.0/8"], tree)
    try:
        assert line.rstrip().endswith("; PROXY protocol required from 127.0.0.1/32, 10.0.0.0/8")
    finally:
        assert stop(proc) == 0


def test_data_connections_never_read_a_proxy_header(servers, tree):
    """PROXY is on the control listener only: on a passive data connection a header is file data like any other
    bytes (uploaded whole and byte-exact), and a download's data connection is not held waiting for one."""
    server = proxy_server(servers, tree)
    conn = Proxied(server.port, format_v1(("127.0.0.1", 40001), ("127.0.0.1", server.port)))
    assert conn.greeting.code == 220
    conn.login()
    assert conn.cmd("TYPE I").code == 200
    header = format_v1(("127.0.0.1", 40002), ("127.0.0.1", server.port))
    v2 = format_v2(("127.0.0.1", 40003), ("127.0.0.1", server.port))
    body = header + v2 + b"the file itself\r\n"
    host, port = conn.pasv()
    with socket.create_connection((host, port), timeout=10) as data:
        assert conn.cmd("STOR headers.bin").code == 150
        data.sendall(body)
    assert conn.reply().code == 226
    assert (tree / "headers.bin").read_bytes() == body
    host, port = conn.pasv()
    with socket.create_connection((host, port), timeout=10) as data:
        assert conn.cmd("RETR hello.txt").code == 150
        got = b""
        while chunk := data.recv(65536):  # bounded: the file is 12 bytes, then the server closes
            got += chunk
    assert got == (tree / "hello.txt").read_bytes()
    assert conn.reply().code == 226
