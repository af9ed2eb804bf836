"""Integrity and fidelity with real peers: lftp ``mirror -R`` keeps times on the ftpkit server through MFMT (and
modes through SITE CHMOD), curl and lftp ``quote HASH`` / ``quote SITE CHMOD``; and ``ftpkit mirror --verify`` in
both directions on every server of the interop set (vsftpd, proftpd, pure-ftpd, pyftpdlib, ftpkit serve): times
kept, a second run moves nothing, digests where the server has them and sizes, said once, where it has none."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import zlib
from pathlib import Path

import pytest

import realservers
from conftest import RunningServer, require_peer
from ftpkit.client import Client, ClientOptions
from realservers import SERVER_NAMES, RealServers
from test_client_servers import JP_DIR, cli, mirror_summary, small_tree, snapshot

pytestmark = pytest.mark.peer

real_servers = realservers.real_servers
served_root = realservers.served_root


def lftp(server: RunningServer, cwd: Path, script: str) -> subprocess.CompletedProcess[str]:
    exe = require_peer("lftp")
    return subprocess.run([exe, "-u", "alice,secret", "-e", f"set cmd:fail-exit yes; debug 10; {script}; bye",
                           f"ftp://127.0.0.1:{server.port}"], cwd=cwd, capture_output=True, text=True, timeout=120)


def sent(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The commands lftp's debug output shows it sent."""
    return [line.split("---> ", 1)[1] for line in result.stderr.splitlines() if "---> " in line]


def test_lftp_mirror_reverse_keeps_times_through_mfmt(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "deep").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha\n")
    (source / "deep" / "b.bin").write_bytes(os.urandom(70000))
    os.utime(source / "a.txt", (1300000000, 1300000000))
    os.utime(source / "deep" / "b.bin", (1600000000.5, 1600000000.5))
    (source / "a.txt").chmod(0o640)
    result = lftp(server, tmp_path, "mirror -R src up")
    assert result.returncode == 0, result.stderr[-3000:]
    commands = sent(result)
    assert "MFMT 20110313070640 a.txt" in commands  # lftp offers the time once FEAT lists MFMT
    assert "MFMT 20200913122640 b.bin" in commands
    assert any(c.startswith("SITE CHMOD 640 ") and c.endswith("a.txt") for c in commands)
    up = server.root / "up"
    assert (up / "a.txt").read_bytes() == b"alpha\n"
    assert (up / "a.txt").stat().st_mtime == 1300000000
    assert (up / "deep" / "b.bin").stat().st_mtime == 1600000000
    assert stat.S_IMODE((up / "a.txt").stat().st_mode) == 0o640
    again = lftp(server, tmp_path, "mirror -R src up")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [c for c in sent(again) if c.startswith("STOR")]  # nothing to send: the times match


def test_lftp_quote_hash_and_site_chmod(server: RunningServer, tmp_path: Path) -> None:
    data = (server.root / "random.bin").read_bytes()
    result = lftp(server, tmp_path, "quote OPTS HASH MD5; quote HASH random.bin; quote XSHA1 random.bin; "
                                    "quote SITE CHMOD 600 hello.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert f"213 MD5 0-{len(data) - 1} {hashlib.md5(data).hexdigest()} random.bin" in lines
    assert f"250 {hashlib.sha1(data).hexdigest().upper()}" in lines
    assert stat.S_IMODE((server.root / "hello.txt").stat().st_mode) == 0o600
    refused = lftp(server, tmp_path, "quote SITE CHMOD 4755 hello.txt")
    assert "<--- 501 SITE CHMOD: '4755' is not an octal mode 000-777" in refused.stderr  # lftp exits 0 after quote
    assert stat.S_IMODE((server.root / "hello.txt").stat().st_mode) == 0o600


def test_curl_quote_hash_and_site_chmod(server: RunningServer) -> None:
    exe = require_peer("curl")
    data = (server.root / "random.bin").read_bytes()
    result = subprocess.run([exe, "-sS", "-v", "--list-only", "-Q", "HASH random.bin", "-Q", "XCRC random.bin",
                             "-Q", "SITE CHMOD 604 hello.txt", f"ftp://alice:secret@127.0.0.1:{server.port}/"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    replies = [line[2:] for line in result.stderr.splitlines() if line.startswith("< ")]
    assert f"213 SHA-256 0-{len(data) - 1} {hashlib.sha256(data).hexdigest()} random.bin" in replies
    assert f"250 {zlib.crc32(data):08X}" in replies
    assert stat.S_IMODE((server.root / "hello.txt").stat().st_mode) == 0o604
    refused = subprocess.run([exe, "-sS", "--list-only", "-Q", "MFMT 20201302030405 hello.txt",
                              f"ftp://alice:secret@127.0.0.1:{server.port}/"], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0  # curl stops on the 501 of a malformed time


# --- ftpkit mirror --verify on every server ----------------------------------------------------------------------


def remote_times(srv: realservers.RealServer, names: list[str]) -> dict[str, float]:
    with Client(ClientOptions(timeout=20)) as ftp:
        ftp.connect(srv.host, srv.port)
        ftp.login(srv.user, srv.password)
        return {name: ftp.mdtm(name) for name in names}


@pytest.mark.parametrize("server_name", SERVER_NAMES)
def test_mirror_verify_keeps_times_both_ways(real_servers: RealServers, served_root: Path, tmp_path: Path,
                                             server_name: str) -> None:
    srv = real_servers.start(server_name, served_root)
    source = tmp_path / "src"
    small_tree(source)
    for i, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        os.utime(path, (1500000000 + 3600 * i, 1500000000 + 3600 * i))
    files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    flags = ["--verify", "--timeout", "20", "-v"]
    up = cli(tmp_path, "mirror", "--reverse", srv.url("up"), str(source), *flags).ok(srv)
    assert snapshot(served_root / "up") == snapshot(source), str(up)
    has_hash = server_name == "ftpkit"  # the others offer no HASH nor X digests in the interop set
    notes = [line for line in up.err.splitlines() if "offers no HASH" in line]
    assert len(notes) == (0 if has_hash else 1), str(up)  # said once, for the whole run
    verified = [line for line in up.err.splitlines() if line.startswith("=== verified ")]
    assert len(verified) == len(files), str(up)
    assert all(("SHA-256" in line) == has_hash for line in verified), str(up)
    keeps_times = server_name != "vsftpd"  # vsftpd has no MFMT
    assert any(c.startswith("MFMT ") for c in up.commands()) == keeps_times, str(up)
    times = remote_times(srv, [f"up/{name}" for name in files])
    if keeps_times:
        assert times == {f"up/{name}": int((source / name).stat().st_mtime) for name in files}, str(up)
    again = cli(tmp_path, "mirror", "--reverse", srv.url("up"), str(source), *flags).ok(srv)
    assert mirror_summary(again) == {"transferred": 0, "bytes": 0, "unchanged": 4, "deleted": 0}, str(again)

    down = tmp_path / "down"
    first = cli(tmp_path, "mirror", srv.url("up"), str(down), *flags).ok(srv)
    assert snapshot(down) == snapshot(source), str(first)
    assert {f"up/{name}": (down / name).stat().st_mtime for name in files} == times  # exact, MDTM on LIST servers
    second = cli(tmp_path, "mirror", srv.url("up"), str(down), *flags).ok(srv)
    assert mirror_summary(second) == {"transferred": 0, "bytes": 0, "unchanged": 4, "deleted": 0}, str(second)
    assert (down / JP_DIR).is_dir()


@pytest.mark.parametrize("server_name", ["vsftpd", "ftpkit"])
def test_get_put_verify(real_servers: RealServers, served_root: Path, tmp_path: Path, server_name: str) -> None:
    data = os.urandom(1 << 20)
    (served_root / "r.bin").write_bytes(data)
    srv = real_servers.start(server_name, served_root)
    got = cli(tmp_path, "get", "--verify", "-v", "--timeout", "20", srv.url("r.bin")).ok(srv)
    assert (tmp_path / "r.bin").read_bytes() == data
    put = cli(tmp_path, "put", "--verify", "-v", "--timeout", "20", str(tmp_path / "r.bin"), srv.url("back.bin"))
    put.ok(srv)
    assert (served_root / "back.bin").read_bytes() == data
    for result in (got, put):
        if server_name == "ftpkit":
            assert f"SHA-256 {hashlib.sha256(data).hexdigest()}" in result.err
        else:
            assert "ftpkit: note: --verify: 127.0.0.1 offers no HASH (nor XSHA256, XSHA1, XMD5, XCRC): comparing " \
                   "sizes only" in result.err.splitlines()
            assert "(sizes only)" in result.err and f"{1 << 20} bytes" in result.err
