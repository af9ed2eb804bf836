"""The client's integrity and fidelity against the in-process ftpkit server: ``--verify`` on get, put and mirror
(a test server whose storage flips a byte is caught, naming both digests; mirror transfers such a file once more),
the size fallback said once, the digest methods of the library (HASH and the X commands), times kept by mirror in
both directions, and the shell's hash, chmod, touch/utime and df."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from conftest import RunningServer, ServerThread
from ftpkit.client import Client, ClientOptions
from ftpkit.client.errors import NotOfferedError, ReplyError
from ftpkit.server.storage import Download, LocalStorage, Upload
from scriptedftp import scripted_server

FTPKIT = [sys.executable, "-m", "ftpkit"]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(cwd), LANG="C.UTF-8", TERM="dumb")
    return subprocess.run([*FTPKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]


# --- a server that corrupts transfers ----------------------------------------------------------------------------


class FlippedDownload:
    """A download whose first byte arrives flipped (read through ``read``: no file, so no sendfile)."""

    def __init__(self, inner: Download) -> None:
        self.inner = inner
        self.size = inner.size
        self.offset = inner.offset
        self.first = inner.offset == 0

    @property
    def file(self) -> BinaryIO | None:
        return None

    async def read(self, size: int) -> bytes:
        data = await self.inner.read(size)
        if self.first and data:
            self.first = False
            return flip(data)
        return data

    async def close(self) -> None:
        await self.inner.close()


class FlippedUpload:
    """An upload whose first byte is stored flipped."""

    def __init__(self, inner: Upload) -> None:
        self.inner = inner
        self.first = True

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.first and len(data):
            self.first = False
            data = flip(bytes(data))
        await self.inner.write(data)

    async def commit(self) -> None:
        await self.inner.commit()

    async def abort(self) -> None:
        await self.inner.abort()


def corrupting(times: int | None) -> type[LocalStorage]:
    """A storage that corrupts the first ``times`` transfers of each path in each direction (None: every one)."""
    seen: dict[tuple[str, str], int] = {}

    def due(direction: str, vpath: str) -> bool:
        count = seen.get((direction, vpath), 0)
        seen[(direction, vpath)] = count + 1
        return times is None or count < times

    class Corrupting(LocalStorage):
        async def open_read(self, vpath: str, offset: int = 0) -> Download:
            download = await super().open_read(vpath, offset)
            return FlippedDownload(download) if due("down", vpath) else download

        async def open_upload(self, vpath: str, offset: int = 0, append: bool = False) -> Upload:
            upload = await super().open_upload(vpath, offset, append)
            return FlippedUpload(upload) if due("up", vpath) else upload

    return Corrupting


def url(server: RunningServer, path: str = "") -> str:
    return f"ftp://alice:secret@127.0.0.1:{server.port}/{path}"


# --- get / put --verify ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1 << 20])
def test_get_and_put_verify_pass(server: RunningServer, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (server.root / "f.bin").write_bytes(data)
    got = cli(tmp_path, "get", "--verify", "-v", url(server, "f.bin"))
    assert got.returncode == 0, got.stderr
    assert f"=== verified f.bin: SHA-256 {sha256(data)}" in got.stderr
    assert (tmp_path / "f.bin").read_bytes() == data
    put = cli(tmp_path, "put", "--verify", "-v", str(tmp_path / "f.bin"), url(server, "sub/"))
    assert put.returncode == 0, put.stderr
    assert f"=== verified sub/f.bin: SHA-256 {sha256(data)}" in put.stderr
    assert (server.root / "sub" / "f.bin").read_bytes() == data


def test_get_verify_catches_a_flipped_byte(servers: ServerThread, tree: Path, tmp_path: Path) -> None:
    server = servers.start(tree, storage_factory=corrupting(None), users=["alice:secret"])
    data = (tree / "random.bin").read_bytes()
    result = cli(tmp_path, "get", "--verify", url(server, "random.bin"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ftpkit: --verify: random.bin differs from random.bin on the server: SHA-256 here {sha256(flip(data))}, "
        f"on the server {sha256(data)}"]
    without = cli(tmp_path, "get", "-o", "plain.bin", url(server, "random.bin"))  # what --verify is for
    assert without.returncode == 0 and (tmp_path / "plain.bin").read_bytes() == flip(data)


def test_get_verify_to_standard_output(servers: ServerThread, tree: Path, tmp_path: Path) -> None:
    good = cli(tmp_path, "get", "--verify", "-o", "-", url(servers.start(tree, users=["alice:secret"]), "hello.txt"))
    assert (good.returncode, good.stdout) == (0, "hello\nworld\n"), good.stderr
    server = servers.start(tree, storage_factory=corrupting(None), users=["alice:secret"])
    bad = cli(tmp_path, "get", "--verify", "-o", "-", url(server, "hello.txt"))
    assert bad.returncode == 1 and "standard output differs from hello.txt" in bad.stderr
    assert sha256(b"hello\nworld\n") in bad.stderr and sha256(flip(b"hello\nworld\n")) in bad.stderr


def test_put_verify_catches_a_flipped_byte(servers: ServerThread, tree: Path, tmp_path: Path) -> None:
    server = servers.start(tree, storage_factory=corrupting(None), users=["alice:secret"])
    data = os.urandom(300000)
    (tmp_path / "up.bin").write_bytes(data)
    result = cli(tmp_path, "put", "--verify", str(tmp_path / "up.bin"), url(server, "up.bin"))
    assert result.returncode == 1
    assert f"SHA-256 here {sha256(data)}, on the server {sha256(flip(data))}" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    retried = cli(tmp_path, "put", "--verify", "--retries", "1", str(tmp_path / "up.bin"), url(server, "again.bin"))
    assert retried.returncode == 1  # every upload is corrupted: the retry fails the same way
    assert "retry 1 of 1" in retried.stderr


def test_verify_needs_bytes_as_they_are(server: RunningServer, tmp_path: Path) -> None:
    for args in (("get", "--verify", "--ascii", url(server, "hello.txt")),
                 ("put", "--verify", "--append", str(server.root / "hello.txt"), url(server, "x.txt"))):
        result = cli(tmp_path, *args)
        assert result.returncode == 2 and "--verify" in result.stderr and len(result.stderr.splitlines()) == 1


# --- mirror --verify ---------------------------------------------------------------------------------------------


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = re.search(r"mirror: (\d+) transferred \((\d+) bytes\), (\d+) unchanged, (\d+) deleted", result.stderr)
    assert match, result.stderr
    return dict(zip(("transferred", "bytes", "unchanged", "deleted"), map(int, match.groups()), strict=True))


def test_mirror_verify_transfers_a_file_that_differs_once_more(servers: ServerThread, tree: Path,
                                                               tmp_path: Path) -> None:
    server = servers.start(tree, storage_factory=corrupting(1), users=["alice:secret"])
    local = tmp_path / "down"
    first = cli(tmp_path, "mirror", "--verify", "--parallel", "2", url(server), str(local))
    assert first.returncode == 0, first.stderr
    assert f"{local / 'random.bin'} differs from ./random.bin on the server" in first.stderr
    assert "transferring random.bin once more" in first.stderr
    for path in ("random.bin", "hello.txt", "sub/inner.txt", "日本語ファイル.txt"):
        assert (local / path).read_bytes() == (tree / path).read_bytes(), path
        assert (local / path).stat().st_mtime == int((tree / path).stat().st_mtime), path
    second = cli(tmp_path, "mirror", "--verify", url(server), str(local))
    assert summary(second) == {"transferred": 0, "bytes": 0, "unchanged": 4, "deleted": 0}, second.stderr

    up = tmp_path / "up"
    up.mkdir()
    (up / "a.bin").write_bytes(os.urandom(5000))
    reverse = cli(tmp_path, "mirror", "--reverse", "--verify", url(server, "up"), str(up))
    assert reverse.returncode == 0 and "transferring a.bin once more" in reverse.stderr, reverse.stderr
    assert (tree / "up" / "a.bin").read_bytes() == (up / "a.bin").read_bytes()


def test_mirror_verify_reports_a_file_that_differs_twice(servers: ServerThread, tree: Path, tmp_path: Path) -> None:
    server = servers.start(tree, storage_factory=corrupting(None), users=["alice:secret"])
    os.utime(tree / "sub" / "inner.txt", (1500000000, 1500000000))
    local = tmp_path / "down"
    first = cli(tmp_path, "mirror", "--verify", url(server, "sub"), str(local))
    assert first.returncode == 1
    data = (tree / "sub" / "inner.txt").read_bytes()
    assert (f"ftpkit: inner.txt: --verify: {local / 'inner.txt'} differs from sub/inner.txt on the server: SHA-256 "
            f"here {sha256(flip(data))}, on the server {sha256(data)}") in first.stderr.splitlines()
    assert summary(first)["transferred"] == 0
    assert (local / "inner.txt").stat().st_mtime != 1500000000  # the bad copy does not get the good one's time
    second = cli(tmp_path, "mirror", url(server, "sub"), str(local))  # a bad copy is never taken for a good one
    assert summary(second)["transferred"] == 1


def test_without_hash_sizes_are_compared_and_it_is_said_once(servers: ServerThread, tree: Path,
                                                              tmp_path: Path) -> None:
    server = servers.start(tree, users=["alice:secret"], hash_enabled=False)
    result = cli(tmp_path, "mirror", "--verify", "--parallel", "2", "-v", url(server), str(tmp_path / "down"))
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "offers no HASH" in line]
    assert notes == ["ftpkit: note: --verify: 127.0.0.1 offers no HASH (nor XSHA256, XSHA1, XMD5, XCRC): comparing "
                     "sizes only"]
    assert f"=== verified ./random.bin: {1 << 20} bytes (sizes only)" in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("--> HASH")]


def test_a_refused_digest_falls_back_to_sizes_for_that_file(servers: ServerThread, tree: Path,
                                                            tmp_path: Path) -> None:
    server = servers.start(tree, users=["alice:secret"], hash_max_size=1000)
    result = cli(tmp_path, "get", "--verify", "-v", url(server, "random.bin"))
    assert result.returncode == 0, result.stderr
    assert "ftpkit: note: --verify: HASH random.bin failed: 556" in result.stderr
    assert "comparing sizes for random.bin" in result.stderr
    assert "=== verified random.bin: 1048576 bytes (sizes only)" in result.stderr


# --- times kept by mirror ----------------------------------------------------------------------------------------


def test_mirror_keeps_times_both_ways_and_a_second_run_moves_nothing(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "deep").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"a")
    (source / "deep" / "b.bin").write_bytes(os.urandom(3000))
    os.utime(source / "a.txt", (1300000000.75, 1300000000.75))
    os.utime(source / "deep" / "b.bin", (1600000000, 1600000000))
    up = cli(tmp_path, "mirror", "--reverse", "-v", url(server, "up"), str(source))
    assert up.returncode == 0, up.stderr
    assert "--> MFMT 20110313070640 up/a.txt" in up.stderr  # whole seconds: pyftpdlib takes no fraction
    assert (server.root / "up" / "a.txt").stat().st_mtime == 1300000000
    assert (server.root / "up" / "deep" / "b.bin").stat().st_mtime == 1600000000
    again = cli(tmp_path, "mirror", "--reverse", url(server, "up"), str(source))
    assert summary(again) == {"transferred": 0, "bytes": 0, "unchanged": 2, "deleted": 0}, again.stderr
    os.utime(source / "a.txt", (1300000100, 1300000100))  # only the time changed: MFMT makes it count
    changed = cli(tmp_path, "mirror", "--reverse", url(server, "up"), str(source))
    assert summary(changed)["transferred"] == 1, changed.stderr

    down = tmp_path / "down"
    first = cli(tmp_path, "mirror", url(server, "up"), str(down))
    assert summary(first)["transferred"] == 2
    assert (down / "a.txt").stat().st_mtime == 1300000100
    assert (down / "deep" / "b.bin").stat().st_mtime == 1600000000
    second = cli(tmp_path, "mirror", url(server, "up"), str(down))
    assert summary(second) == {"transferred": 0, "bytes": 0, "unchanged": 2, "deleted": 0}, second.stderr


# --- the library ---------------------------------------------------------------------------------------------------


def test_library_digests_times_modes_and_free_space(server: RunningServer) -> None:
    data = (server.root / "random.bin").read_bytes()
    sent: list[str] = []
    with Client(ClientOptions(timeout=10, transcript=lambda d, t: sent.append(t) if d == "-->" else None)) as ftp:
        ftp.connect("127.0.0.1", server.port)
        ftp.login("alice", "secret")
        result = ftp.remote_hash("random.bin")
        assert (result.algorithm, result.digest, result.start, result.end) == \
            ("SHA-256", sha256(data), 0, len(data) - 1)
        assert ftp.remote_hash("random.bin", "MD5").digest == hashlib.md5(data).hexdigest()
        assert ftp.remote_hash("random.bin", "MD5").digest == hashlib.md5(data).hexdigest()
        assert sent.count("OPTS HASH MD5") == 1  # selected once for the session
        assert "OPTS HASH SHA-256" not in sent  # the server's selection was the best already
        assert ftp.set_mtime("hello.txt", 1500000000.9) == 1500000000
        assert (server.root / "hello.txt").stat().st_mtime == 1500000000
        ftp.chmod("hello.txt", 0o600)
        assert stat.S_IMODE((server.root / "hello.txt").stat().st_mode) == 0o600
        assert ftp.available("sub") > 0
        with pytest.raises(ReplyError, match="HASH missing failed: 550"):
            ftp.remote_hash("missing")
        with pytest.raises(NotOfferedError, match="offers no TIGER digests"):
            ftp.remote_hash("random.bin", "TIGER")


class SlowDiskStorage(LocalStorage):
    """A disk so slow that a digest takes longer than the client's --timeout."""

    async def digest(self, vpath: str, algorithm: str, start: int, end: int) -> str:
        await asyncio.sleep(1.5)  # the slow disk (not a synchronisation: the client must simply wait it out)
        return await super().digest(vpath, algorithm, start, end)


def test_a_digest_may_take_longer_than_the_timeout(servers: ServerThread, tree: Path) -> None:
    """The server reads the whole file before it answers: a HASH reply is awaited longer than other replies."""
    server = servers.start(tree, storage_factory=SlowDiskStorage, users=["alice:secret"])
    with Client(ClientOptions(timeout=0.5)) as ftp:
        ftp.connect("127.0.0.1", server.port)
        ftp.login("alice", "secret")
        assert ftp.remote_hash("hello.txt").digest == sha256(b"hello\nworld\n")


def test_library_falls_back_to_an_x_command(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"x").hexdigest().upper()
    feat = b"211-Features:\r\n XCRC filename;start;end\r\n XSHA256 filename;start;end\r\n211 End\r\n"
    with scripted_server({"FEAT": feat, "XSHA256": f"250 {digest}\r\n".encode()}) as (port, received), \
            Client(ClientOptions(timeout=5)) as ftp:
        ftp.connect("127.0.0.1", port)
        ftp.login("joe", "x")
        result = ftp.remote_hash("dir/x.txt")
        with pytest.raises(NotOfferedError, match="no MFMT"):
            ftp.set_mtime("dir/x.txt", 0)
    assert (result.algorithm, result.digest) == ("SHA-256", digest.lower())
    assert "XSHA256 dir/x.txt" in received and not [line for line in received if line.startswith("HASH")]


def test_library_without_any_digest_command() -> None:
    with scripted_server({"FEAT": b"211-Features:\r\n MDTM\r\n211 End\r\n"}) as (port, _), \
            Client(ClientOptions(timeout=5)) as ftp:
        ftp.connect("127.0.0.1", port)
        ftp.login("joe", "x")
        assert ftp.hash_method() is None
        with pytest.raises(NotOfferedError, match=r"offers no HASH \(nor XSHA256, XSHA1, XMD5, XCRC\)"):
            ftp.remote_hash("x")
        with pytest.raises(ReplyError, match="does not offer AVBL"):
            ftp.available()


# --- the shell -----------------------------------------------------------------------------------------------------


def test_shell_hash_chmod_touch_df(server: RunningServer, tmp_path: Path) -> None:
    data = (server.root / "random.bin").read_bytes()
    script = "\n".join([
        "hash random.bin",
        "hash random.bin md5",
        "hash random.bin crc32",
        "hash",  # the BSD toggle still works
        "chmod 600 hello.txt",
        "touch hello.txt 20200102030405",
        "modtime hello.txt",
        "utime sub 19991231235959",
        "df",
        "df sub",
        "help",
        "bye",
    ]) + "\n"
    result = subprocess.run([*FTPKIT, "shell", url(server)], input=script, capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"SHA-256 (random.bin) = {sha256(data)}" in out
    assert f"MD5 (random.bin) = {hashlib.md5(data).hexdigest()}" in out
    assert "Hash mark printing: on." in out
    assert stat.S_IMODE((server.root / "hello.txt").stat().st_mode) == 0o600
    assert (server.root / "hello.txt").stat().st_mtime == 1577934245
    assert "hello.txt\t01/02/2020 03:04:05 GMT" in out
    assert (server.root / "sub").stat().st_mtime == 946684799
    assert re.search(r"^\.\t\d+ bytes available", out, re.MULTILINE) and re.search(r"^sub\t\d+ bytes", out, re.M)
    for name in ("hash", "chmod", "touch", "utime", "df"):
        assert re.search(rf"\b{name}\b", out.split("Commands are:")[1]), name


@pytest.mark.parametrize(("line", "words"), [
    ("hash random.bin sha-3", "?sha-3: not a hash algorithm (one of SHA-256, SHA-512, SHA-1, MD5, CRC32)"),
    ("chmod 4755 hello.txt", "?chmod: '4755' is not an octal mode 000-777"),
    ("chmod 644", "usage: chmod MODE FILE"),
    ("touch hello.txt 2020", "?touch: '2020' is not a time YYYYMMDDHHMMSS[.sss] (UTC)"),
    ("touch missing.txt", "MFMT"),
    ("hash missing.txt", "HASH missing.txt failed: 550"),
    ("df hello.txt", "AVBL hello.txt failed: 550"),
])
def test_shell_bad_input_is_one_line_and_fails_the_script(server: RunningServer, tmp_path: Path, line: str,
                                                          words: str) -> None:
    result = subprocess.run([*FTPKIT, "shell", url(server)], input=f"{line}\nbye\n", capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert [text for text in result.stdout.splitlines() if words in text], result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_verify_check_is_awaitable_from_the_library(server: RunningServer, tmp_path: Path) -> None:
    """Verifier works on its own too (what the CLI uses)."""
    from ftpkit.client.core import FTPClient
    from ftpkit.client.errors import VerifyError
    from ftpkit.client.verify import Verifier, local_file

    (tmp_path / "copy.bin").write_bytes(flip((server.root / "random.bin").read_bytes()))
    notes: list[tuple[str, str]] = []

    async def main() -> Any:
        async with FTPClient(ClientOptions(timeout=10)) as ftp:
            await ftp.connect("127.0.0.1", server.port)
            await ftp.login("alice", "secret")
            verifier = Verifier(lambda d, t: notes.append((d, t)))
            await verifier.check(ftp, "hello.txt", "h", 12, local_file(server.root / "hello.txt"))
            with pytest.raises(VerifyError):
                await verifier.check(ftp, "random.bin", "copy", 1 << 20, local_file(tmp_path / "copy.bin"))

    asyncio.run(main())
    assert notes[0][0] == "===" and notes[0][1].startswith("verified hello.txt: SHA-256 ")
