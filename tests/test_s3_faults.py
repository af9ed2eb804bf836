"""Object storage that fails: at start-up (unreachable, refusing the credentials, no such bucket) ``ftpkit serve``
says so in one line naming the setting and exits 2; lost mid-session (SeaweedFS stopped by its PID during a
transfer), the transfer gets 451/426 naming the backend's error, nothing half-written becomes visible, and once
the service is back the same session and server go on.
"""

from __future__ import annotations

import asyncio
import ftplib
import io
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, passive_range
from s3server import ACCESS_KEY, SECRET_KEY, Bucket, SeaweedFS

FTPKIT = [sys.executable, "-m", "ftpkit"]
MIB = 1 << 20


def serve(tmp_path: Path, env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(env_extra)
    return subprocess.run([*FTPKIT, "serve", str(tmp_path), "--port", "0", "--passive-ports", passive_range(), *args],
                          env=env, capture_output=True, text=True, timeout=90)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unreachable_endpoint_at_start_is_one_line_exit_2(tmp_path):
    port = free_port()  # nothing listens there
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    line = one_line(serve(tmp_path, env, "--storage", "s3://ftpkit", "--aws-endpoint-url", f"http://127.0.0.1:{port}"))
    assert line.startswith(f"ftpkit serve: aws_endpoint_url: cannot reach the S3 service at http://127.0.0.1:{port}")


@pytest.mark.parametrize(("env_extra", "setting", "why"), [
    ({"AWS_SECRET_ACCESS_KEY": "not-the-secret-9c1e"}, "aws_secret_access_key", "refused the secret key"),
    ({"AWS_ACCESS_KEY_ID": "nobody-knows-me"}, "aws_access_key_id", "refused access"),
], ids=["wrong-secret", "unknown-key"])
def test_refused_credentials_at_start_name_the_setting(seaweedfs, tmp_path, env_extra, setting, why):
    env = {**seaweedfs.env(), **env_extra}
    line = one_line(serve(tmp_path, env, "--storage", f"s3://{seaweedfs.bucket}"))
    assert line.startswith(f"ftpkit serve: {setting}: {seaweedfs.endpoint} {why}"), line
    assert SECRET_KEY not in line and "not-the-secret-9c1e" not in line  # secrets are never shown


def test_missing_bucket_at_start_names_storage(seaweedfs, tmp_path):
    line = one_line(serve(tmp_path, seaweedfs.env(), "--storage", "s3://no-such-bucket-here"))
    assert line == f"ftpkit serve: storage: bucket 'no-such-bucket-here' does not exist at {seaweedfs.endpoint}"


@pytest.mark.parametrize(("args", "message"), [
    (["--storage", "/srv/ftp"], "storage: '/srv/ftp' is not s3://BUCKET[/PREFIX] (leave storage out to serve the "
                                "local root)"),
    (["--storage", "s3://ftpkit/a/../b"], "storage: 'a/../b': the prefix may not contain . or .. segments or NUL"),
    (["--aws-region", "eu-west-1"], 'aws_region: is only used with storage = "s3://BUCKET[/PREFIX]"'),
    (["--storage", "s3://ftpkit", "--aws-access-key-id", "k"], "aws_secret_access_key: is needed too when the "
                                                               "other half of the S3 credentials is set"),
    (["--storage", "s3://ftpkit", "--aws-endpoint-url", "ftp://x"], "aws_endpoint_url: 'ftp://x' is not an "
                                                                    "http:// or https:// URL such as "
                                                                    "http://127.0.0.1:8333"),
])
def test_bad_storage_settings_are_one_line(tmp_path, args, message):
    assert one_line(serve(tmp_path, {}, *args)) == f"ftpkit serve: {message}"


def test_config_file_takes_the_aws_sdk_names_and_the_secret_is_not_shown(seaweedfs, tmp_path):
    config = tmp_path / "ftpkit.toml"
    config.write_text(f'storage = "s3://{seaweedfs.bucket}/viafile"\n'
                      f'AWS_ENDPOINT_URL = "{seaweedfs.endpoint}"\nAWS_ACCESS_KEY_ID = "{ACCESS_KEY}"\n'
                      f'AWS_SECRET_ACCESS_KEY = "{SECRET_KEY}"\nAWS_REGION = "us-east-1"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen([*FTPKIT, "serve", str(tmp_path), "--config", str(config), "--port", "0",
                             "--passive-ports", passive_range(), "--user", "alice:secret"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        assert sel.select(timeout=60), "ftpkit serve printed nothing"
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert f"serving s3://{seaweedfs.bucket}/viafile (object storage) at ftp://127.0.0.1:" in line, line
        port = int(line.split("ftp://127.0.0.1:")[1].split("/")[0])
        ftp = ftplib.FTP(timeout=30)
        ftp.connect("127.0.0.1", port)
        ftp.login("alice", "secret")
        ftp.storbinary("STOR f.txt", io.BytesIO(b"through the config file"))
        ftp.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert SECRET_KEY not in err
    with Bucket(seaweedfs, "viafile/") as bucket:
        assert bucket.get("f.txt") == b"through the config file"


# --- the service lost mid-session --------------------------------------------------------------------------------


@pytest.fixture
def own_weed(tmp_path):
    """A SeaweedFS of this test's own: it is stopped and started again."""
    weed = SeaweedFS(tmp_path / "weed")
    weed.start()
    yield weed
    weed.stop()


def _drain(conn) -> int:
    got = 0
    try:
        while data := conn.recv(1 << 20):
            got += len(data)
    except OSError:
        pass
    return got


def test_service_lost_mid_download_then_back(servers, own_weed, tmp_path):
    data = os.urandom(48 * MIB)
    with Bucket(own_weed) as bucket:
        bucket.put("big.bin", data)
    root = tmp_path / "root"
    root.mkdir()
    server = servers.start(root, users=["alice:secret"], **own_weed.settings())
    ftp = ftplib.FTP(timeout=60)
    ftp.connect(server.host, server.port)
    ftp.login("alice", "secret")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    first = conn.recv(MIB)
    assert first  # the download is under way
    own_weed.stop(signal.SIGKILL)
    got = len(first) + _drain(conn)
    conn.close()
    with pytest.raises(ftplib.error_temp, match=r"^4(51|26) .*S3 backend") as failed:
        ftp.voidresp()
    assert got < len(data), failed.value

    own_weed.start()
    out = io.BytesIO()
    ftp.retrbinary("RETR big.bin", out.write)  # the same session, once the service is back
    assert out.getvalue() == data
    ftp.quit()


def test_service_lost_mid_upload_leaves_the_old_version(servers, own_weed, tmp_path):
    with Bucket(own_weed) as bucket:
        bucket.put("keep.bin", b"the old version")
    root = tmp_path / "root"
    root.mkdir()
    server = servers.start(root, users=["alice:secret"], **own_weed.settings())
    ftp = ftplib.FTP(timeout=60)
    ftp.connect(server.host, server.port)
    ftp.login("alice", "secret")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR keep.bin")
    block = os.urandom(MIB)
    for _ in range(12):
        conn.sendall(block)
    own_weed.stop(signal.SIGKILL)
    try:
        for _ in range(52):  # the rest, until the server gives up on the data connection
            conn.sendall(block)
    except OSError:
        pass
    conn.close()
    with pytest.raises(ftplib.error_temp, match=r"^4(51|26) .*S3 backend"):
        ftp.voidresp()

    own_weed.start()
    with Bucket(own_weed) as bucket:
        assert bucket.get("keep.bin") == b"the old version"  # nothing half-written became visible
        # the abort could not reach the service while it was down: its multipart upload is left, unseen by
        # readers, until the server's sweeper (at start-up, then every partial_sweep_interval) aborts it
        left = bucket.uploads()
        assert left in ([], ["keep.bin"])
        swept = asyncio.run_coroutine_threadsafe(server.server.s3.sweep_uploads(0), server.loop).result(60)
        assert swept == len(left) and bucket.uploads() == []
        assert ftp.storbinary("STOR keep.bin", io.BytesIO(b"new")).startswith("226")  # the session goes on
        assert bucket.get("keep.bin") == b"new"
    other = ftplib.FTP(timeout=60)  # and the server takes new sessions
    other.connect(server.host, server.port)
    other.login("alice", "secret")
    assert other.size("keep.bin") == 3
    other.quit()
    ftp.quit()
