"""TLS hardening of the control connection, with real peers (openssl s_client, Python's ssl): ALPN other than
``ftp`` refused with the no_application_protocol alert (RFC 7301; ALPACA), no ALPN accepted, no client-initiated
renegotiation, and what is not a ClientHello dropped at once (the handshake timeout here is an hour)."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from conftest import require_peer
from ftpkit.cli.cert import write_self_signed
from ftpkit.tls import server_context
from rawftp import Raw, read_all

TIMEOUT = 30


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("cert")
    cert, key = directory / "cert.pem", directory / "key.pem"
    write_self_signed("127.0.0.1", cert, key, days=2)
    return cert, key


@pytest.fixture(params=["1.2", "1.3"])
def tls_server(request, servers, tree, cert):
    return servers.start(tree, users=["alice:secret"], tls="optional", tls_cert=str(cert[0]), tls_key=str(cert[1]),
                         tls_implicit_port=0, tls_handshake_timeout=3600, tls_max_version=request.param)


def _client_context(cert: tuple[Path, Path], alpn: list[str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _auth_tls(server, cert, alpn: list[str] | None) -> tuple[Raw, ssl.SSLSocket]:
    c = Raw("127.0.0.1", server.port, timeout=TIMEOUT)
    assert c.cmd("AUTH TLS").code == 234
    tls = _client_context(cert, alpn).wrap_socket(c.sock, server_hostname="127.0.0.1")
    c.sock = tls
    return c, tls


@pytest.mark.parametrize("alpn, selected", [(None, None), (["ftp"], "ftp"), (["http/1.1", "ftp"], "ftp")])
def test_a_client_without_alpn_or_offering_ftp_is_served(tls_server, cert, alpn, selected):
    c, tls = _auth_tls(tls_server, cert, alpn)
    assert tls.selected_alpn_protocol() == selected
    c.login()
    assert c.cmd("PWD").code == 257


def _handshake(sock: socket.socket, ctx: ssl.SSLContext) -> tuple[bytes, ssl.SSLError | None]:
    """Run a client handshake over ``sock`` through memory BIOs (the socket stays ours): what the server sent, and
    the client's error."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    received = b""
    while True:
        try:
            tls.do_handshake()
            return received, None
        except ssl.SSLError as exc:
            if not isinstance(exc, ssl.SSLWantReadError):
                return received, exc
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()
            received += data


@pytest.mark.parametrize("implicit", [False, True], ids=["auth-tls", "implicit"])
def test_a_client_offering_only_other_protocols_gets_no_application_protocol(tls_server, cert, implicit, caplog):
    ctx = _client_context(cert, ["http/1.1", "h2"])
    with caplog.at_level(logging.WARNING, logger="ftpkit.server"):
        if implicit:
            sock = socket.create_connection(("127.0.0.1", tls_server.server.implicit_port), timeout=TIMEOUT)
        else:
            c = Raw("127.0.0.1", tls_server.port, timeout=TIMEOUT)
            assert c.cmd("AUTH TLS").code == 234
            sock = c.sock
        received, error = _handshake(sock, ctx)
        assert "alert no application protocol" in str(error), error
        assert received == bytes([21, 3, 3, 0, 2, 2, 120])  # one record: alert, fatal, no_application_protocol
        assert read_all(sock) == b""  # nothing after the alert: the server closed the connection
    assert any("http/1.1, h2 but not ftp" in r.getMessage() and "no_application_protocol" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    c, _ = _auth_tls(tls_server, cert, None)  # the server goes on
    c.login()


def _s_client(port: int, *args: str, stdin: bytes = b"") -> str:
    openssl = require_peer("openssl")
    proc = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "ftp", *args],
                          input=stdin, capture_output=True, timeout=TIMEOUT, check=False)
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")


def test_openssl_s_client_alpn(tls_server, cert):
    refused = _s_client(tls_server.port, "-alpn", "http/1.1", "-CAfile", str(cert[0]))
    assert "alert no application protocol" in refused and "SSL alert number 120" in refused, refused
    served = _s_client(tls_server.port, "-alpn", "ftp", "-CAfile", str(cert[0]), "-ign_eof",
                       stdin=b"NOOP\r\nQUIT\r\n")
    assert "ALPN protocol: ftp" in served and "200 NOOP ok." in served and "221 Goodbye." in served, served
    plain = _s_client(tls_server.port, "-CAfile", str(cert[0]), "-ign_eof", stdin=b"NOOP\r\nQUIT\r\n")
    assert "No ALPN negotiated" in plain and "200 NOOP ok." in plain and "221 Goodbye." in plain, plain


def test_client_initiated_renegotiation_is_refused(servers, tree, cert):
    assert server_context(str(cert[0]), str(cert[1])).options & ssl.OP_NO_RENEGOTIATION
    server = servers.start(tree, tls="optional", tls_cert=str(cert[0]), tls_key=str(cert[1]))
    # s_client renegotiates when it reads a line "R" (TLS 1.2; TLS 1.3 has no renegotiation)
    out = _s_client(server.port, "-tls1_2", "-CAfile", str(cert[0]), stdin=b"R\n")
    assert "RENEGOTIATING" in out and "no renegotiation" in out, out


@pytest.mark.parametrize("garbage", [
    b"\x00",
    b"G",
    b"USER alice\r\n",
    b"GET / HTTP/1.1\r\nHost: ftp.example.com\r\n\r\n",
    b"\x80\x2e\x01\x03\x01",  # an SSL 2.0 hello
    b"\x16\x03\x01\xff\xff",  # a record larger than TLS allows
    b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a handshake message that is not a ClientHello
])
@pytest.mark.parametrize("implicit", [False, True], ids=["auth-tls", "implicit"])
def test_garbage_instead_of_a_client_hello_is_dropped_at_once(tls_server, garbage, implicit, caplog):
    with caplog.at_level(logging.WARNING, logger="ftpkit.server"):
        if implicit:
            sock = socket.create_connection(("127.0.0.1", tls_server.server.implicit_port), timeout=TIMEOUT)
        else:
            c = Raw("127.0.0.1", tls_server.port, timeout=TIMEOUT)
            assert c.cmd("AUTH TLS").code == 234
            sock = c.sock
        sock.sendall(garbage)
        assert read_all(sock) == b""  # closed by the server long before its hour of handshake timeout
    assert any("not a TLS ClientHello" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
