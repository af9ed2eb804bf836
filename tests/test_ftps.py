"""FTPS (RFC 4217): explicit and implicit TLS with real peers, session reuse required, PROT rules, CCC, and a
handshake that never finishes."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

import realservers
from conftest import require_peer
from ftpkit.cli.cert import write_self_signed
from ftpkit.client import Client, ClientOptions
from ftpkit.protocol.features import parse_features
from ftpkit.protocol.hostport import parse_epsv
from rawftp import Raw, read_all

FTPKIT = [sys.executable, "-m", "ftpkit"]
real_servers = realservers.real_servers
served_root = realservers.served_root


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("cert")
    directory.chmod(0o755)
    cert, key = directory / "cert.pem", directory / "key.pem"
    write_self_signed("127.0.0.1", cert, key, days=2)
    key.chmod(0o644)  # vsftpd and proftpd read it as root; fine for a throwaway test key
    return cert, key


@pytest.fixture
def tls_server(servers, tree, cert):
    return servers.start(tree, users=["alice:secret"], tls="required", tls_cert=str(cert[0]), tls_key=str(cert[1]),
                         tls_implicit_port=0, allow_ccc=True)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _curl_active_tls_broken() -> bool:
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    return bool(re.match(r"curl 7\.88\.", out))


@pytest.mark.parametrize("mode", ["epsv", "pasv", "eprt", "port", "implicit"])
def test_curl_with_tls_and_session_reuse_required(tls_server, cert, tmp_path, mode):
    curl = require_peer("curl")
    if mode in ("eprt", "port") and _curl_active_tls_broken():
        pytest.skip("curl 7.88.x never starts TLS on an active-mode data connection (a curl bug, seen against "
                    "vsftpd, proftpd and pure-ftpd too); lftp covers active FTPS below")
    flags = {"epsv": [], "pasv": ["--disable-epsv"], "eprt": ["--ftp-port", "127.0.0.1"],
             "port": ["--ftp-port", "127.0.0.1", "--disable-eprt"], "implicit": []}[mode]
    if mode == "implicit":
        base = f"ftps://alice:secret@127.0.0.1:{tls_server.server.implicit_port}"
    else:
        base = f"ftp://alice:secret@127.0.0.1:{tls_server.port}"
        flags = [*flags, "--ssl-reqd"]
    common = [curl, "-sS", "--cacert", str(cert[0]), *flags]
    got = tmp_path / "got.bin"
    subprocess.run([*common, f"{base}/random.bin", "-o", str(got)], check=True, timeout=60)
    assert sha(got) == sha(tls_server.root / "random.bin")
    up = tmp_path / "up.bin"
    up.write_bytes(os.urandom(1 << 20))
    subprocess.run([*common, "-T", str(up), f"{base}/uploaded-{mode}.bin"], check=True, timeout=60)
    assert sha(tls_server.root / f"uploaded-{mode}.bin") == sha(up)


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_lftp_with_ssl_force(tls_server, cert, tmp_path, passive):
    lftp = require_peer("lftp")
    up = tmp_path / "up.bin"
    up.write_bytes(os.urandom(1 << 20))
    script = (f"set ssl:ca-file {cert[0]}; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; "
              f"set ftp:passive-mode {'on' if passive else 'off'}; set net:max-retries 1; set net:timeout 10; "
              f"open -u alice,secret ftp://127.0.0.1:{tls_server.port}; get random.bin -o {tmp_path}/got.bin; "
              f"put {up} -o lftp-up.bin")
    result = subprocess.run([lftp, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert sha(tmp_path / "got.bin") == sha(tls_server.root / "random.bin")
    assert sha(tls_server.root / "lftp-up.bin") == sha(up)


@pytest.mark.parametrize(("passive", "ccc"), [(True, False), (False, False), (True, True)],
                         ids=["passive", "active", "passive-ccc"])
def test_ftpkit_client_against_ftpkit_server(tls_server, cert, tmp_path, passive, ccc):
    lines: list[str] = []
    options = ClientOptions(passive=passive, tls="explicit", ca_file=str(cert[0]), ccc=ccc, timeout=10,
                            transcript=lambda d, t: lines.append(f"{d} {t}"))
    with Client(options) as ftp:
        ftp.connect("127.0.0.1", tls_server.port)
        ftp.login("alice", "secret")
        ftp.download("random.bin", tmp_path / "got.bin")
        ftp.upload(tmp_path / "got.bin", "copy.bin")
        assert "日本語ファイル.txt" in [e.name for e in ftp.listdir()]
    assert sha(tmp_path / "got.bin") == sha(tls_server.root / "random.bin") == sha(tls_server.root / "copy.bin")
    assert any("resumed the control connection's session" in line for line in lines)
    assert ("--> CCC" in lines) == ccc


def test_implicit_tls_with_the_cli(tls_server, cert, tmp_path):
    result = subprocess.run([*FTPKIT, "get", "--ca-file", str(cert[0]), "-o", str(tmp_path / "h.txt"),
                             f"ftps://alice:secret@127.0.0.1:{tls_server.server.implicit_port}/hello.txt"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "h.txt").read_bytes() == b"hello\nworld\n"


def test_certificate_problems_are_one_line(tls_server, tmp_path):
    base = f"ftp://alice:secret@127.0.0.1:{tls_server.port}/hello.txt"
    untrusted = subprocess.run([*FTPKIT, "get", "--tls", base], capture_output=True, text=True, timeout=60,
                               cwd=tmp_path)
    assert untrusted.returncode == 1
    assert untrusted.stderr.strip().endswith("the server's certificate is self-signed (use --ca-file with it, or "
                                             "--insecure)")
    insecure = subprocess.run([*FTPKIT, "get", "--tls", "--insecure", base], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
    assert insecure.returncode == 0 and "warning: --insecure" in insecure.stderr
    clear = subprocess.run([*FTPKIT, "get", base], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert clear.returncode == 1 and "530" in clear.stderr and "use --tls" in clear.stderr


def _tls_raw(server, cert) -> tuple[Raw, ssl.SSLContext, ssl.SSLSocket]:
    c = Raw("127.0.0.1", server.port)
    assert c.cmd("AUTH TLS").code == 234
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
    return c, ctx, c.sock  # type: ignore[return-value]


def test_data_connection_without_session_reuse_is_refused(tls_server, cert):
    c, ctx, control = _tls_raw(tls_server, cert)
    c.login()
    assert c.cmd("PBSZ 0").code == 200 and c.cmd("PROT P").code == 200
    port = parse_epsv(c.cmd("EPSV").text)
    data = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.send("RETR hello.txt")
    assert c.reply().code == 150
    fresh = ssl.create_default_context(cafile=str(cert[0]))  # another context: no session to resume
    tls = fresh.wrap_socket(data, server_hostname="127.0.0.1")
    reply = c.reply()
    assert reply.code == 522 and "resume" in reply.text
    assert "use a client that does" in reply.text  # the server's diagnosis: data-tls-not-resumed
    assert tls_server.server.metrics.registry.get_sample_value(
        "ftpkit_data_connection_failures_total", {"mode": "passive", "code": "data-tls-not-resumed"}) == 1
    tls.close()
    # the same client resuming its control session is served
    port = parse_epsv(c.cmd("EPSV").text)
    data = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.send("RETR hello.txt")
    assert c.reply().code == 150
    tls = ctx.wrap_socket(data, server_hostname="127.0.0.1", session=control.session)
    assert read_all(tls) == b"hello\r\nworld\r\n"
    assert c.reply().code == 226


def test_protected_download_is_answered_while_the_client_keeps_its_side_open(tls_server, cert):
    """A client that waits for the 226 before it closes its side of a PROT P data connection (it never sends its
    close_notify first) gets the 226 at once: the server's TLS shutdown does not wait for the client's."""
    c, ctx, control = _tls_raw(tls_server, cert)
    c.login()
    assert c.cmd("PBSZ 0").code == 200 and c.cmd("PROT P").code == 200
    assert c.cmd("TYPE I").code == 200
    for _ in range(3):
        port = parse_epsv(c.cmd("EPSV").text)
        data = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.send("RETR random.bin")
        assert c.reply().code == 150
        tls = ctx.wrap_socket(data, server_hostname="127.0.0.1", session=control.session)
        received = bytearray()
        while chunk := tls.recv(1 << 20):  # b"" at the server's close_notify
            received += chunk
        expected = (tls_server.root / "random.bin").read_bytes()
        assert len(received) == len(expected)
        assert bytes(received) == expected
        c.sock.settimeout(3)  # the old server answered only after a 5 s wait for our close_notify
        assert c.reply().code == 226
        c.sock.settimeout(10)
        tls.close()
    assert c.cmd("NOOP").code == 200


def test_tls_required_rules(tls_server, cert):
    plain = Raw("127.0.0.1", tls_server.port)
    reply = plain.cmd("USER alice")
    assert reply.code == 530 and "AUTH TLS" in reply.text
    assert plain.cmd("USER anonymous").code == 331  # anonymous may stay in clear unless told otherwise
    c, _, _ = _tls_raw(tls_server, cert)
    c.login()
    assert c.cmd("PROT P").code == 503  # PBSZ first
    assert c.cmd("PBSZ 0").text == "PBSZ=0"
    assert c.cmd("PROT C").code == 200
    c.cmd("EPSV")
    assert c.cmd("RETR hello.txt").code == 521
    assert c.cmd("PROT S").code == 536
    feat = parse_features(Raw("127.0.0.1", tls_server.port).cmd("FEAT"))
    assert (feat["AUTH"], feat["PBSZ"], feat["PROT"]) == ("SSL;TLS", "", "")


def test_commands_pipelined_behind_auth_are_discarded(tls_server, cert):
    c = Raw("127.0.0.1", tls_server.port)
    c.send(b"AUTH TLS\r\nUSER alice\r\n")  # the USER travels in clear: it must not count after the handshake
    assert c.reply().code == 234
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
    assert c.cmd("PASS secret").code == 503  # no USER was taken
    assert c.cmd("NOOP").code == 200


def test_ccc_refused_unless_allowed(servers, tree, cert):
    strict = servers.start(tree, users=["alice:secret"], tls="optional", tls_cert=str(cert[0]),
                           tls_key=str(cert[1]))
    c, _, _ = _tls_raw(strict, cert)
    assert c.cmd("CCC").code == 534


def test_stalled_handshake_is_dropped_while_others_carry_on(servers, tree, cert):
    server = servers.start(tree, users=["alice:secret"], tls="optional", tls_cert=str(cert[0]),
                           tls_key=str(cert[1]), tls_implicit_port=0, tls_handshake_timeout=0.5,
                           max_prelogin_per_ip=64)
    stalled = [socket.create_connection(("127.0.0.1", server.server.implicit_port), timeout=10) for _ in range(20)]
    # meanwhile a normal session works
    other = Raw("127.0.0.1", server.port)
    assert other.cmd("NOOP").code == 200
    for sock in stalled:  # each is closed by the server after the handshake timeout, without a byte sent
        assert read_all(sock) == b""
    assert other.cmd("NOOP").code == 200


def test_stalled_handshake_costs_no_cpu(tree, cert, tmp_path):
    proc = subprocess.Popen([*FTPKIT, "serve", str(tree), "--port", "0", "--tls", "implicit", "--tls-cert",
                             str(cert[0]), "--tls-key", str(cert[1]), "--tls-handshake-timeout", "3",
                             "--max-prelogin-per-ip", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r":(\d+)/", proc.stdout.readline()).group(1))

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(30)]
        for sock in stalled:
            assert read_all(sock) == b""  # ~3 s: every connection waited out its handshake timeout
        assert cpu() - before < 0.5  # waiting costs (almost) nothing: no busy loop
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def vsftpd_tls(real_servers, served_root, cert):
    (served_root / "random.bin").write_bytes(os.urandom(1 << 20))
    return real_servers.start("vsftpd", served_root, extra=[
        "ssl_enable=YES", f"rsa_cert_file={cert[0]}", f"rsa_private_key_file={cert[1]}", "allow_anon_ssl=YES",
        "force_local_logins_ssl=YES", "force_local_data_ssl=YES", "require_ssl_reuse=YES", "ssl_ciphers=HIGH"])


@pytest.fixture
def proftpd_tls(real_servers, served_root, cert):
    (served_root / "random.bin").write_bytes(os.urandom(1 << 20))
    modules = Path(__file__).resolve().parents[1] / ".peers/proftpd/usr/lib/proftpd"
    return real_servers.start("proftpd", served_root, extra=[
        f"ModulePath {modules}", "LoadModule mod_tls.c", "<IfModule mod_tls.c>", "  TLSEngine on",
        "  TLSRequired on", f"  TLSRSACertificateFile {cert[0]}", f"  TLSRSACertificateKeyFile {cert[1]}",
        "  TLSProtocol TLSv1.2 TLSv1.3", "</IfModule>"])  # session reuse is proftpd's default requirement


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
@pytest.mark.parametrize("peer", ["vsftpd", "proftpd"])
def test_ftpkit_client_against_real_ftps_servers(request, peer, passive, cert, tmp_path):
    srv = request.getfixturevalue(f"{peer}_tls")
    lines: list[str] = []
    options = ClientOptions(passive=passive, tls="explicit", ca_file=str(cert[0]), timeout=15,
                            transcript=lambda d, t: lines.append(f"{d} {t}"))
    with Client(options) as ftp:
        ftp.connect(srv.host, srv.port)
        ftp.login(srv.user, srv.password)
        ftp.download("random.bin", tmp_path / "got.bin")
        ftp.upload(tmp_path / "got.bin", "ftpkit-up.bin")
        names = [e.name for e in ftp.listdir()]
    assert "random.bin" in names and "ftpkit-up.bin" in names
    assert sha(tmp_path / "got.bin") == sha(srv.root / "random.bin") == sha(srv.root / "ftpkit-up.bin")
    assert any("data connection TLS" in line and "resumed" in line for line in lines)


def test_doctor_with_tls(tls_server, cert):
    ok = subprocess.run([*FTPKIT, "doctor", "--json", "--tls", "--ca-file", str(cert[0]),
                         f"ftp://alice:secret@127.0.0.1:{tls_server.port}/"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    import json

    report = json.loads(ok.stdout)
    assert [f["code"] for f in report["findings"]] == ["control-encrypted", "healthy"]
    assert next(c for c in report["checks"] if c["name"] == "tls")["status"] == "pass"
    assert report["summary"] == {"control": "ok", "passive": "ok", "active": "ok"}
    implicit = subprocess.run([*FTPKIT, "doctor", "--json", "--ca-file", str(cert[0]),
                               f"ftps://alice:secret@127.0.0.1:{tls_server.server.implicit_port}/"],
                              capture_output=True, text=True, timeout=60)
    assert implicit.returncode == 0 and "control-encrypted" in implicit.stdout
    untrusted = subprocess.run([*FTPKIT, "doctor", "--json", "--tls",
                                f"ftp://alice:secret@127.0.0.1:{tls_server.port}/"], capture_output=True, text=True,
                               timeout=60)
    assert untrusted.returncode == 1
    finding = json.loads(untrusted.stdout)["findings"][0]
    assert finding["code"] == "tls-failed" and "self-signed" in finding["summary"]


class _ReusingFTP_TLS(ftplib.FTP_TLS):
    """Python's ftplib with the data connection resuming the control connection's TLS session (what curl, lftp
    and FileZilla do; stock ftplib does not, so servers that require reuse refuse it, vsftpd as ftpkit)."""

    protected = False  # our own record of PROT P (ftplib keeps its own in a private attribute)

    def prot_p(self):  # type: ignore[no-untyped-def]
        self.protected = True
        return super().prot_p()

    def prot_c(self):  # type: ignore[no-untyped-def]
        self.protected = False
        return super().prot_c()

    def ntransfercmd(self, cmd, rest=None):  # type: ignore[no-untyped-def]
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self.protected:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


@pytest.mark.parametrize("passive", [True, False])
def test_ftplib_with_tls_and_session_reuse_required(tls_server, cert, tmp_path, passive):
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    payload = os.urandom(1 << 20)
    ftp = _ReusingFTP_TLS(context=ctx)
    ftp.connect("127.0.0.1", tls_server.port, timeout=20)
    ftp.login("alice", "secret")
    ftp.prot_p()
    ftp.set_pasv(passive)
    ftp.storbinary("STOR up.bin", io.BytesIO(payload))
    got = io.BytesIO()
    ftp.retrbinary("RETR up.bin", got.write)
    assert got.getvalue() == payload and (tls_server.root / "up.bin").read_bytes() == payload
    ftp.quit()


def test_stock_ftplib_is_told_why_when_reuse_is_required_and_served_when_not(servers, tree, cert):
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    strict = servers.start(tree, users=["alice:secret"], tls="required", tls_cert=str(cert[0]),
                           tls_key=str(cert[1]))
    ftp = ftplib.FTP_TLS(context=ctx)
    ftp.connect("127.0.0.1", strict.port, timeout=20)
    ftp.login("alice", "secret")
    ftp.prot_p()
    with pytest.raises((ftplib.error_perm, ssl.SSLError, OSError)):
        ftp.retrbinary("RETR hello.txt", lambda _: None)
    lenient = servers.start(tree, users=["alice:secret"], tls="required", tls_cert=str(cert[0]),
                            tls_key=str(cert[1]), require_session_reuse=False)
    ftp = ftplib.FTP_TLS(context=ctx)
    ftp.connect("127.0.0.1", lenient.port, timeout=20)
    ftp.login("alice", "secret")
    ftp.prot_p()
    got = io.BytesIO()
    ftp.retrbinary("RETR hello.txt", got.write)
    assert got.getvalue() == b"hello\nworld\n"
    ftp.quit()
