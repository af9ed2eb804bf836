"""TLS session resumption on protected data connections (``require_session_reuse``): every data connection of a
session resumes, the third and later ones too, under TLS 1.2 and 1.3 (session tickets), with curl, lftp and ftplib
(the session-reusing client), also after transfers that ended badly (a reset, ABOR)."""

from __future__ import annotations

import ftplib
import gc
import io
import ssl
import subprocess
from pathlib import Path

import pytest

from conftest import require_peer
from ftpkit.cli.cert import write_self_signed

DATA_CONNECTIONS = 6


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("cert")
    cert, key = directory / "cert.pem", directory / "key.pem"
    write_self_signed("127.0.0.1", cert, key, days=2)
    return cert, key


@pytest.fixture(params=["1.2", "1.3"])
def tls_server(request, servers, tree, cert):
    return servers.start(tree, users=["alice:secret"], tls="required", tls_cert=str(cert[0]), tls_key=str(cert[1]),
                         tls_max_version=request.param)


class _ReusingFTP_TLS(ftplib.FTP_TLS):
    """ftplib whose protected data connections resume the control connection's TLS session (stock ftplib does not)."""

    resumed: list[bool]

    def ntransfercmd(self, cmd, rest=None):  # type: ignore[no-untyped-def]
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        self.resumed.append(conn.session_reused)
        return conn, size


def test_ftplib_resumes_every_data_connection(tls_server, cert):
    ftp = _ReusingFTP_TLS(context=ssl.create_default_context(cafile=str(cert[0])))
    ftp.resumed = []
    ftp.connect("127.0.0.1", tls_server.port, timeout=20)
    ftp.login("alice", "secret")
    ftp.prot_p()
    for n in range(DATA_CONNECTIONS):
        got = io.BytesIO()
        ftp.retrbinary("RETR hello.txt", got.write)
        assert got.getvalue() == b"hello\nworld\n", n
    assert ftp.resumed == [True] * DATA_CONNECTIONS
    ftp.quit()


def test_curl_resumes_every_data_connection(tls_server, cert):
    curl = require_peer("curl")
    urls = [f"ftp://127.0.0.1:{tls_server.port}/hello.txt"] * DATA_CONNECTIONS
    proc = subprocess.run([curl, "-sS", "-v", "--ssl-reqd", "--cacert", str(cert[0]), "-u", "alice:secret", *urls],
                          capture_output=True, timeout=60, check=False)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    assert proc.stdout == b"hello\nworld\n" * DATA_CONNECTIONS
    assert err.count("226 ") == DATA_CONNECTIONS, err
    assert err.count("SSL re-using session ID") == DATA_CONNECTIONS, err


def test_lftp_resumes_every_data_connection(tls_server, cert, tmp_path):
    lftp = require_peer("lftp")
    script = (f"set ssl:ca-file {cert[0]}; set ftp:ssl-force true; set ftp:ssl-protect-data true; "
              f"set net:max-retries 1; set cmd:fail-exit true; open -u alice,secret ftp://127.0.0.1:{tls_server.port}; "
              + "; ".join(f"get hello.txt -o {tmp_path}/h{n}.txt" for n in range(DATA_CONNECTIONS)))
    proc = subprocess.run([lftp, "-d", "-c", script], capture_output=True, timeout=60, check=False)
    err = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert proc.returncode == 0, err
    assert err.count("<--- 226 ") == DATA_CONNECTIONS and "<--- 522" not in err, err
    assert [(tmp_path / f"h{n}.txt").read_bytes() for n in range(DATA_CONNECTIONS)] == [b"hello\nworld\n"] * 6


class _Stop(Exception):
    pass


def _stop(_: bytes) -> None:
    raise _Stop


def test_data_connections_still_resume_after_transfers_that_ended_badly(tls_server, cert):
    """OpenSSL drops the session of a connection freed without a close_notify sent from its cache; with TLS 1.2 the
    data connections share the control connection's session, so one reset download used to make every later data
    connection of the session a 522 (as soon as the broken connection was freed: ``gc.collect()`` here, in the
    server's process, instead of waiting for it)."""
    (tls_server.root / "big.bin").write_bytes(bytes(16 << 20))
    ftp = _ReusingFTP_TLS(context=ssl.create_default_context(cafile=str(cert[0])))
    ftp.resumed = []
    ftp.connect("127.0.0.1", tls_server.port, timeout=20)
    ftp.login("alice", "secret")
    ftp.prot_p()
    for _ in range(2):  # the client resets the data connection in the middle of a download
        with pytest.raises(_Stop):
            ftp.retrbinary("RETR big.bin", _stop)
        assert ftp.getmultiline().startswith("426")
    conn = ftp.transfercmd("RETR big.bin")  # ABOR in the middle of a download
    conn.recv(1024)
    assert ftp.abort().startswith("426")  # the transfer's reply, then ABOR's
    conn.close()
    assert ftp.getmultiline().startswith("226")
    gc.collect()
    for n in range(DATA_CONNECTIONS):
        got = io.BytesIO()
        ftp.retrbinary("RETR hello.txt", got.write)
        assert got.getvalue() == b"hello\nworld\n", n
    assert ftp.resumed == [True] * (3 + DATA_CONNECTIONS)
    ftp.quit()
