"""The client interop tests that make sense, against the S3 backend (a real SeaweedFS): curl, lftp and ftpkit's
client get, put, resume, mirror and list (ftplib: get, put, resume both ways, list, rename, folders), in passive
and in active mode, and over FTPS. Results are checked in the bucket (uploads) and on the local disk (downloads);
the server's debug log proves which data-connection command each mode really used.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import require_peer
from ftpkit.cli.cert import write_self_signed
from s3server import JP_DIR, JP_FILE, TREE_RANDOM, Bucket

pytestmark = pytest.mark.peer

MIB = 1 << 20
TIMEOUT = 90
FTPKIT = [sys.executable, "-m", "ftpkit"]
COMMAND = re.compile(r"^\[[^\]]+\] --> (?P<verb>[A-Z]+)")
PASSIVE, ACTIVE = {"PASV", "EPSV"}, {"PORT", "EPRT"}


@pytest.fixture
def verbs(caplog: pytest.LogCaptureFixture) -> Any:
    """The data-connection commands the server received (its debug log)."""
    caplog.set_level(logging.DEBUG, logger="ftpkit.server")

    def seen() -> set[str]:
        out = set()
        for record in caplog.records:
            match = COMMAND.match(record.getMessage())
            if match and match["verb"] in PASSIVE | ACTIVE:
                out.add(match["verb"])
        return out
    return seen


def run(args: list[str], tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(tmp_path), LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="dumb")
    result = subprocess.run(args, input=stdin, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    assert result.returncode == 0, f"$ {' '.join(args)}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def same(got: bytes | None, want: bytes) -> bool:
    return got is not None and (len(got), sha(got)) == (len(want), sha(want))


# --- curl --------------------------------------------------------------------------------------------------------

CURL_MODES = {"passive": (["--ftp-pasv"], PASSIVE), "active": (["--ftp-port", "127.0.0.1"], ACTIVE)}


def curl(server: Any, mode: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = require_peer("curl")
    return run([exe, "-sS", "--noproxy", "*", "--max-time", "60", "-u", "alice:secret", *CURL_MODES[mode][0],
                *args], tmp_path)


@pytest.mark.parametrize("mode", list(CURL_MODES))
def test_curl_get_put_resume_list(s3_server, bucket, mode, tmp_path, verbs):
    url = s3_server.url
    curl(s3_server, mode, tmp_path, f"{url}/random.bin", "-o", "got.bin")
    assert same((tmp_path / "got.bin").read_bytes(), TREE_RANDOM)

    data = os.urandom(11 * MIB)
    (tmp_path / "up.bin").write_bytes(data)
    curl(s3_server, mode, tmp_path, "-T", "up.bin", f"{url}/up.bin")
    assert same(bucket.get("up.bin"), data)

    bucket.put("resume.bin", data[:6 * MIB])  # what an earlier upload stored: curl continues it (SIZE, APPE)
    curl(s3_server, mode, tmp_path, "-C", "-", "-T", "up.bin", f"{url}/resume.bin")
    assert same(bucket.get("resume.bin"), data)

    (tmp_path / "part.bin").write_bytes(data[:3 * MIB])  # a partial download: curl continues it (REST)
    curl(s3_server, mode, tmp_path, "-C", "-", "-o", "part.bin", f"{url}/up.bin")
    assert same((tmp_path / "part.bin").read_bytes(), data)

    names = curl(s3_server, mode, tmp_path, "--list-only", f"{url}/").stdout.splitlines()
    assert set(names) == {"hello.txt", "random.bin", "sub", JP_DIR, JP_FILE, "up.bin", "resume.bin"}
    listing = curl(s3_server, mode, tmp_path, f"{url}/sub/").stdout
    assert re.search(r"^-.* 6 .* inner\.txt$", listing, re.MULTILINE), listing
    assert verbs() and verbs() <= CURL_MODES[mode][1], verbs()
    assert bucket.uploads() == []


# --- lftp --------------------------------------------------------------------------------------------------------

LFTP_MODES = {"passive": ("set ftp:passive-mode on", PASSIVE), "active": ("set ftp:passive-mode off", ACTIVE)}


def lftp(server: Any, mode: str, tmp_path: Path, commands: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    exe = require_peer("lftp")
    settings = ("set net:max-retries 1; set net:timeout 20; set cmd:fail-exit yes; set ftp:ssl-allow no; "
                f"set xfer:clobber on; {LFTP_MODES[mode][0]}; {extra}")
    return run([exe, "-c", f"{settings}; open -u alice,secret -p {server.port} {server.host}; {commands}"], tmp_path)


def local_tree(top: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha\n", f"{JP_DIR}/日本語.txt": "日本語の中身\n".encode(),
             f"{JP_DIR}/深い/データ.bin": os.urandom(20000), "big/large.bin": os.urandom(9 * MIB)}
    for name, content in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(content)
    return files


@pytest.mark.parametrize("mode", list(LFTP_MODES))
def test_lftp_get_put_resume_mirror(s3_server, bucket, mode, tmp_path, verbs):
    data = os.urandom(7 * MIB)
    (tmp_path / "up.bin").write_bytes(data)
    bucket.put("cont.bin", data[:5 * MIB + 3])
    lftp(s3_server, mode, tmp_path, f"get random.bin -o {tmp_path}/got.bin; put {tmp_path}/up.bin -o up.bin; "
                                    f"put -c {tmp_path}/up.bin -o cont.bin")
    assert same((tmp_path / "got.bin").read_bytes(), TREE_RANDOM)
    assert same(bucket.get("up.bin"), data)
    assert same(bucket.get("cont.bin"), data)  # REST + STOR: the stored 5 MiB were copied, not sent again

    source = tmp_path / "src"
    files = local_tree(source)
    lftp(s3_server, mode, tmp_path, f"mirror -R {source} tree")
    for name, content in files.items():
        assert same(bucket.get(f"tree/{name}"), content), name
    down = tmp_path / "down"
    lftp(s3_server, mode, tmp_path, f"mirror tree {down}")
    assert {str(p.relative_to(down)): p.read_bytes() for p in down.rglob("*") if p.is_file()} == files
    names = lftp(s3_server, mode, tmp_path, "cls -1 tree").stdout.splitlines()
    assert names == ["tree/a.txt", "tree/big/", f"tree/{JP_DIR}/"], names
    assert verbs() and verbs() <= LFTP_MODES[mode][1], verbs()
    assert bucket.uploads() == []


# --- ftpkit's client ---------------------------------------------------------------------------------------------

FTPKIT_MODES = {"passive": ("--passive", PASSIVE), "active": ("--active", ACTIVE)}


@pytest.mark.parametrize("mode", list(FTPKIT_MODES))
def test_ftpkit_client_get_put_resume_mirror_ls(s3_server, bucket, mode, tmp_path, verbs):
    flag = FTPKIT_MODES[mode][0]
    base = f"ftp://alice:secret@127.0.0.1:{s3_server.port}"
    run([*FTPKIT, "get", flag, "-o", "got.bin", f"{base}/random.bin"], tmp_path)
    assert same((tmp_path / "got.bin").read_bytes(), TREE_RANDOM)
    data = os.urandom(8 * MIB)
    (tmp_path / "up.bin").write_bytes(data)
    bucket.put("up.bin", data[:6 * MIB])
    run([*FTPKIT, "put", flag, "-c", "up.bin", f"{base}/up.bin"], tmp_path)
    assert same(bucket.get("up.bin"), data)
    (tmp_path / "again.bin").write_bytes(data[:MIB])
    run([*FTPKIT, "get", flag, "-c", "-o", "again.bin", f"{base}/up.bin"], tmp_path)
    assert same((tmp_path / "again.bin").read_bytes(), data)

    source = tmp_path / "src"
    files = local_tree(source)
    run([*FTPKIT, "mirror", flag, "--reverse", f"{base}/m", str(source)], tmp_path)
    for name, content in files.items():
        assert same(bucket.get(f"m/{name}"), content), name
    down = tmp_path / "down"
    run([*FTPKIT, "mirror", flag, f"{base}/m", str(down)], tmp_path)
    assert {str(p.relative_to(down)): p.read_bytes() for p in down.rglob("*") if p.is_file()} == files
    listing = run([*FTPKIT, "ls", flag, f"{base}/m/"], tmp_path).stdout
    assert listing.splitlines() == ["a.txt", "big/", f"{JP_DIR}/"], listing
    assert verbs() and verbs() <= FTPKIT_MODES[mode][1], verbs()


# --- ftplib (the standard library's client, in this process) ----------------------------------------------------

FTPLIB_MODES = {"passive": (True, PASSIVE), "active": (False, ACTIVE)}


@pytest.mark.parametrize("mode", list(FTPLIB_MODES))
def test_ftplib_get_put_resume_list_rename(s3_server, bucket, mode, verbs):
    ftp = ftplib.FTP()
    ftp.encoding = "utf-8"
    ftp.connect("127.0.0.1", s3_server.port, timeout=TIMEOUT)
    try:
        ftp.login("alice", "secret")
        ftp.set_pasv(FTPLIB_MODES[mode][0])
        got = bytearray()
        ftp.retrbinary("RETR random.bin", got.extend)
        assert same(bytes(got), TREE_RANDOM)
        tail = bytearray()  # a download resumed (REST n + RETR: a ranged GET)
        ftp.retrbinary("RETR random.bin", tail.extend, rest=1000)
        assert same(bytes(tail), TREE_RANDOM[1000:])

        data = os.urandom(5 * MIB)
        ftp.storbinary("STOR up.bin", io.BytesIO(data))
        assert same(bucket.get("up.bin"), data)
        assert ftp.size("up.bin") == len(data)
        bucket.put("cont.bin", data[:3 * MIB])  # what an interrupted upload stored: REST n + STOR continues it
        ftp.storbinary("STOR cont.bin", io.BytesIO(data[3 * MIB:]), rest=3 * MIB)
        assert same(bucket.get("cont.bin"), data)

        ftp.mkd("fold")
        ftp.rename("up.bin", "fold/moved.bin")
        assert bucket.get("up.bin") is None and same(bucket.get("fold/moved.bin"), data)
        facts = dict(ftp.mlsd("", ["type", "size"]))
        assert facts["fold"]["type"] == "dir" and facts["cont.bin"]["size"] == str(len(data)), facts
        assert JP_FILE in ftp.nlst() and "moved.bin" in ftp.nlst("fold")
        ftp.delete("fold/moved.bin")
        ftp.rmd("fold")
        assert "fold" not in ftp.nlst()
        ftp.quit()
    finally:
        ftp.close()
    assert verbs() and verbs() <= FTPLIB_MODES[mode][1], verbs()


# --- FTPS --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("s3cert")
    cert, key = directory / "cert.pem", directory / "key.pem"
    write_self_signed("127.0.0.1", cert, key, days=2)
    return cert, key


@pytest.fixture
def tls_s3_server(servers: Any, bucket: Bucket, tmp_path: Path, cert: tuple[Path, Path]) -> Any:
    root = tmp_path / "tlsroot"
    root.mkdir()
    return servers.start(root, users=["alice:secret"], tls="required", tls_cert=str(cert[0]), tls_key=str(cert[1]),
                         **bucket.weed.settings(bucket.prefix))


def test_ftps_with_curl_lftp_and_ftpkit(tls_s3_server, bucket, cert, tmp_path):
    data = os.urandom(9 * MIB)
    (tmp_path / "up.bin").write_bytes(data)
    url = f"ftp://alice:secret@127.0.0.1:{tls_s3_server.port}"
    curl_exe = require_peer("curl")
    run([curl_exe, "-sS", "--ssl-reqd", "--cacert", str(cert[0]), "-T", "up.bin", f"{url}/curl.bin"], tmp_path)
    assert same(bucket.get("curl.bin"), data)
    run([curl_exe, "-sS", "--ssl-reqd", "--cacert", str(cert[0]), "-o", "c.bin", f"{url}/curl.bin"], tmp_path)
    assert same((tmp_path / "c.bin").read_bytes(), data)

    lftp_exe = require_peer("lftp")
    script = (f"set ssl:ca-file {cert[0]}; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; "
              f"set net:max-retries 1; set net:timeout 20; set cmd:fail-exit yes; "
              f"open -u alice,secret ftp://127.0.0.1:{tls_s3_server.port}; get random.bin -o {tmp_path}/l.bin; "
              f"put {tmp_path}/up.bin -o lftp.bin")
    run([lftp_exe, "-c", script], tmp_path)
    assert same((tmp_path / "l.bin").read_bytes(), TREE_RANDOM)
    assert same(bucket.get("lftp.bin"), data)

    run([*FTPKIT, "put", "--tls", "--ca-file", str(cert[0]), "up.bin", f"{url}/ftpkit.bin"], tmp_path)
    assert same(bucket.get("ftpkit.bin"), data)
    run([*FTPKIT, "get", "--tls", "--ca-file", str(cert[0]), "-o", "f.bin", f"{url}/ftpkit.bin"], tmp_path)
    assert same((tmp_path / "f.bin").read_bytes(), data)
