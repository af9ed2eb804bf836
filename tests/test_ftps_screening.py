"""The ClientHello screen beyond ALPN on the control connection, with real peers (openssl s_client, Python's ssl):
strict SNI (``tls_strict_sni``) on control and data connections, and ALPN screening of protected data connections
(a data connection offering only ``http/1.1`` gets no_application_protocol, as a control connection does)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import require_peer
from rawftp import Raw, read_all

TIMEOUT = 30
NAMES = ("ftp.example.test", "*.files.example.test")


@pytest.fixture(scope="module")
def named_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for two DNS names (one a wildcard) and 127.0.0.1."""
    directory = tmp_path_factory.mktemp("named")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAMES[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt = x509.SubjectAlternativeName([*(x509.DNSName(n) for n in NAMES),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2)).add_extension(alt, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _start(servers, tree, cert, version: str = "1.2", **settings):
    return servers.start(tree, users=["alice:secret"], tls="optional", tls_cert=str(cert[0]), tls_key=str(cert[1]),
                         tls_implicit_port=0, tls_max_version=version, **settings)


@pytest.fixture(params=["1.2", "1.3"])
def strict_server(request, servers, tree, named_cert):
    return _start(servers, tree, named_cert, request.param, tls_strict_sni=True)


def _context(cert, alpn: list[str] | None = None, check: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    ctx.check_hostname = check
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _control(server, cert, hostname: str | None, ctx: ssl.SSLContext | None = None) -> tuple[Raw, ssl.SSLSocket]:
    """A logged-in control connection under TLS; ``hostname`` is sent as SNI (an IP address is not: RFC 6066)."""
    c = Raw("127.0.0.1", server.port, timeout=TIMEOUT)
    assert c.cmd("AUTH TLS").code == 234
    ctx = ctx or _context(cert, check=hostname is not None)
    tls = ctx.wrap_socket(c.sock, server_hostname=hostname)
    c.sock = tls
    c.login()
    return c, tls


@pytest.mark.parametrize("hostname", ["ftp.example.test", "EU.Files.Example.Test", "127.0.0.1", None])
def test_strict_sni_serves_the_certificates_names_and_clients_without_sni(strict_server, named_cert, hostname):
    c, _ = _control(strict_server, named_cert, hostname)
    assert c.cmd("PWD").code == 257


@pytest.mark.parametrize("implicit", [False, True], ids=["auth-tls", "implicit"])
@pytest.mark.parametrize("hostname", ["www.example.test", "files.example.test", "a.b.files.example.test"])
def test_strict_sni_refuses_other_names_with_unrecognized_name(strict_server, named_cert, hostname, implicit, caplog):
    with caplog.at_level(logging.WARNING, logger="ftpkit.server"):
        if implicit:
            sock = socket.create_connection(("127.0.0.1", strict_server.server.implicit_port), timeout=TIMEOUT)
        else:
            c = Raw("127.0.0.1", strict_server.port, timeout=TIMEOUT)
            assert c.cmd("AUTH TLS").code == 234
            sock = c.sock
        ctx = _context(named_cert, check=False)
        received, error = _handshake_named(sock, ctx, hostname)
        assert "UNRECOGNIZED_NAME" in str(error), error
        assert received == bytes([21, 3, 3, 0, 2, 2, 112])  # alert, fatal, unrecognized_name
        assert read_all(sock) == b""
    assert any(f"'{hostname}', which the certificate does not name" in r.getMessage()
               and "unrecognized_name" in r.getMessage() for r in caplog.records), [r.getMessage() for r in
                                                                                    caplog.records]
    c, _ = _control(strict_server, named_cert, "ftp.example.test")  # the server goes on


def _handshake_named(sock: socket.socket, ctx: ssl.SSLContext, hostname: str) -> tuple[bytes, ssl.SSLError | None]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=hostname)
    received = b""
    while True:
        try:
            tls.do_handshake()
            return received, None
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            incoming.write(data) if data else incoming.write_eof()
            received += data
        except ssl.SSLError as exc:
            return received, exc


def test_openssl_s_client_and_strict_sni(strict_server, named_cert):
    openssl = require_peer("openssl")

    def s_client(*args: str) -> str:
        proc = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{strict_server.port}", "-starttls", "ftp",
                               "-CAfile", str(named_cert[0]), "-ign_eof", *args], input=b"NOOP\r\nQUIT\r\n",
                              capture_output=True, timeout=TIMEOUT, check=False)
        return (proc.stdout + proc.stderr).decode("utf-8", "replace")

    refused = s_client("-servername", "www.example.test")
    assert "tlsv1 unrecognized name" in refused and "SSL alert number 112" in refused, refused
    for served in (s_client("-servername", "ftp.example.test"), s_client("-noservername")):
        assert "200 NOOP ok." in served and "221 Goodbye." in served, served


def test_without_strict_sni_any_name_is_served(servers, tree, named_cert):
    server = _start(servers, tree, named_cert)
    c = Raw("127.0.0.1", server.port, timeout=TIMEOUT)
    assert c.cmd("AUTH TLS").code == 234
    c.sock = _context(named_cert, check=False).wrap_socket(c.sock, server_hostname="www.example.test")
    c.login()
    assert c.cmd("PWD").code == 257


def _data_handshake(c: Raw, ctx: ssl.SSLContext, hostname: str | None, session: ssl.SSLSession | None):
    """RETR over a protected passive data connection whose client (``ctx``) sends SNI ``hostname`` and resumes
    ``session``: (what the server sent, the data connection's handshake error, the final reply)."""
    assert c.cmd("PBSZ 0").code == 200 and c.cmd("PROT P").code == 200 and c.cmd("TYPE I").code == 200
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=TIMEOUT)
    c.send("RETR hello.txt")
    assert c.reply().code == 150
    received, error = _handshake_session(data, ctx, hostname, session)
    return received, error, c.reply()


def _handshake_session(sock, ctx, hostname, session) -> tuple[bytes, ssl.SSLError | None]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=hostname, session=session)
    received = b""
    while True:
        try:
            obj.do_handshake()
            sock.sendall(outgoing.read())  # the client's Finished (it speaks last when it resumes, and in TLS 1.3)
            return received, None
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            incoming.write(data) if data else incoming.write_eof()
            received += data
        except ssl.SSLError as exc:
            return received, exc


@pytest.fixture(params=["1.2", "1.3"])
def tls_server(request, servers, tree, named_cert):
    # Python resumes a session only through the context that made it, and the data connections here offer other
    # ALPN protocols than the control connection: the screen comes before any resumption, so none is required
    return _start(servers, tree, named_cert, request.param, require_session_reuse=False)


def test_a_data_connection_offering_only_other_protocols_gets_no_application_protocol(tls_server, named_cert,
                                                                                      caplog):
    c, _ = _control(tls_server, named_cert, None)
    with caplog.at_level(logging.WARNING, logger="ftpkit.server"):
        received, error, final = _data_handshake(c, _context(named_cert, ["http/1.1"], check=False), None, None)
    assert "alert no application protocol" in str(error), error
    assert received == bytes([21, 3, 3, 0, 2, 2, 120])
    assert final.code == 522 and "http/1.1 but not ftp" in final.text, final
    assert any("http/1.1 but not ftp" in r.getMessage() for r in caplog.records)
    # the session goes on: a data connection offering ftp (or nothing) is served
    for alpn in (["http/1.1", "ftp"], None):
        host, port = c.pasv()
        data = socket.create_connection((host, port), timeout=TIMEOUT)
        c.send("RETR hello.txt")
        assert c.reply().code == 150
        wrapped = _context(named_cert, alpn, check=False).wrap_socket(data, server_hostname=None)
        assert wrapped.selected_alpn_protocol() == ("ftp" if alpn else None)
        assert read_all(wrapped) == b"hello\nworld\n"
        assert c.reply().code == 226


def test_garbage_on_a_data_connection_is_refused_at_once(tls_server, named_cert):
    c, _ = _control(tls_server, named_cert, None)
    assert c.cmd("PBSZ 0").code == 200 and c.cmd("PROT P").code == 200 and c.cmd("TYPE I").code == 200
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=TIMEOUT)
    c.send("RETR hello.txt")
    assert c.reply().code == 150
    data.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert read_all(data) == b""
    final = c.reply()
    assert final.code == 522 and "not a TLS ClientHello" in final.text, final


def test_strict_sni_on_the_data_connection(strict_server, named_cert):
    ctx = _context(named_cert, check=False)
    c, tls = _control(strict_server, named_cert, "ftp.example.test", ctx)
    received, error, final = _data_handshake(c, ctx, "www.example.test", tls.session)
    assert "UNRECOGNIZED_NAME" in str(error), error
    assert received == bytes([21, 3, 3, 0, 2, 2, 112])
    assert final.code == 522 and "which the certificate does not name" in final.text, final
    received, error, final = _data_handshake(c, ctx, "ftp.example.test", tls.session)
    assert error is None and final.code == 226, (error, final)


def test_client_initiated_renegotiation_is_refused_on_data_connections(servers, tree, named_cert):
    """TLS 1.2 (1.3 has no renegotiation): a data connection that asks to renegotiate (pyOpenSSL, which can) gets
    the no_renegotiation alert, and the session goes on."""
    from OpenSSL import SSL

    server = _start(servers, tree, named_cert, "1.2", require_session_reuse=False)
    c, _ = _control(server, named_cert, None)
    assert c.cmd("PBSZ 0").code == 200 and c.cmd("PROT P").code == 200 and c.cmd("TYPE I").code == 200
    # more than loopback's autotuned socket buffers and the TLS transport's write buffer hold together (4 + 6 + 4
    # MiB): with 8 MiB the server could send it all and say 226 before the renegotiation reached it
    (server.root / "big.bin").write_bytes(bytes(64 << 20))
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=TIMEOUT)
    c.send("RETR big.bin")
    assert c.reply().code == 150
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    data.setblocking(True)  # pyOpenSSL reads a socket in blocking mode only (the suite's timeout bounds the test)
    conn = SSL.Connection(ctx, data)
    conn.set_connect_state()
    conn.do_handshake()
    assert conn.recv(1024)
    assert conn.renegotiate()
    with pytest.raises(SSL.Error, match="no renegotiation"):
        while True:  # the server answers the renegotiation's ClientHello with a fatal alert, in among the data
            conn.recv(1 << 16)
    data.close()
    final = c.reply()
    assert final.code == 426, final
    host, port = c.pasv()  # the session goes on
    data = socket.create_connection((host, port), timeout=TIMEOUT)
    c.send("RETR hello.txt")
    assert c.reply().code == 150
    assert read_all(_context(named_cert, check=False).wrap_socket(data, server_hostname=None)) == b"hello\nworld\n"
    assert c.reply().code == 226
