"""HASH, the X digest commands, RANG, MFMT, MFF, SITE CHMOD and AVBL on the in-process server, byte-exact against
Python's hashlib and zlib (computed here, not by ftpkit's own code), on files of 0 bytes to 100 MiB; the size limit,
the per-session and server-wide concurrency, the refusals and every kind of bad input."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from conftest import RunningServer, ServerThread
from ftpkit.protocol.features import parse_features
from ftpkit.protocol.hashes import parse_hash_reply
from ftpkit.server.storage import LocalStorage
from rawftp import Raw

MIB = 1 << 20
BIG = 100 * MIB


def crc32(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


EXPECTED: dict[str, Callable[[bytes], str]] = {
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512": lambda data: hashlib.sha512(data).hexdigest(),
    "SHA-1": lambda data: hashlib.sha1(data).hexdigest(),
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "CRC32": crc32,
}
X_VERBS = {"SHA-256": "XSHA256", "SHA-512": "XSHA512", "SHA-1": "XSHA1", "MD5": "XMD5", "CRC32": "XCRC"}


def expected_of_file(path: Path, algorithm: str, start: int = 0, end: int | None = None) -> str:
    """hashlib / zlib over a file in chunks (the 100 MiB one too), independently of ftpkit."""
    hashers: dict[str, Any] = {"SHA-256": hashlib.sha256(), "SHA-512": hashlib.sha512(), "SHA-1": hashlib.sha1(),
                               "MD5": hashlib.md5()}
    crc = 0
    with path.open("rb") as fh:
        fh.seek(start)
        left = (end if end is not None else path.stat().st_size) - start
        while left > 0:
            chunk = fh.read(min(left, 4 * MIB))
            if not chunk:
                break
            left -= len(chunk)
            if algorithm == "CRC32":
                crc = zlib.crc32(chunk, crc)
            else:
                hashers[algorithm].update(chunk)
    return f"{crc:08x}" if algorithm == "CRC32" else hashers[algorithm].hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served folder: 0 bytes, 1 byte, 1 MiB random, 100 MiB sparse with random blocks, a sub-folder."""
    root = tmp_path_factory.mktemp("integrity")
    (root / "empty").write_bytes(b"")
    (root / "one").write_bytes(b"\x8f")
    (root / "mib.bin").write_bytes(os.urandom(MIB))
    with (root / "big.bin").open("wb") as fh:
        fh.truncate(BIG)
        for offset in (0, 7 * MIB + 13, 50 * MIB, BIG - 4096):
            fh.seek(offset)
            fh.write(os.urandom(4096))
    (root / "with space.txt").write_bytes(b"spaced out\n")
    (root / "dir").mkdir()
    return root


def login(server: RunningServer, user: str = "alice", password: str = "secret") -> Raw:
    c = Raw(server.host, server.port, timeout=60)
    c.login(user, password)
    return c


@pytest.fixture
def srv(servers: ServerThread, files: Path) -> RunningServer:
    return servers.start(files, users=["alice:secret"])


# --- digests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty", "one", "mib.bin", "big.bin"])
def test_every_algorithm_byte_exact_by_hash_and_x_commands(srv: RunningServer, files: Path, name: str) -> None:
    c = login(srv)
    size = (files / name).stat().st_size
    for algorithm, verb in X_VERBS.items():
        want = expected_of_file(files / name, algorithm)
        assert c.cmd(f"OPTS HASH {algorithm}").text == algorithm
        reply = c.cmd(f"HASH {name}")
        assert reply.code == 213, reply
        assert reply.text == f"{algorithm} 0-{max(size - 1, 0)} {want} {name}"
        x = c.cmd(f"{verb} {name}")
        assert (x.code, x.text) == (250, want.upper())


def test_feat_lists_the_algorithms_and_the_selected_one(srv: RunningServer) -> None:
    c = Raw(srv.host, srv.port)
    features = parse_features(c.cmd("FEAT"))
    assert features["HASH"] == "SHA-256*;SHA-512;SHA-1;MD5;CRC32"
    assert {features[verb] for verb in X_VERBS.values()} == {"filename;start;end"}
    assert features["MFMT"] == "" and features["MFF"] == "modify;UNIX.mode;" and features["AVBL"] == ""
    assert "RANG" not in features  # RANG is taken for HASH only; RETR and STOR do not take it
    c.login()
    assert (c.cmd("OPTS HASH").code, c.cmd("OPTS HASH").text) == (200, "SHA-256")
    assert c.cmd("OPTS HASH sha-512").text == "SHA-512"  # names are case-insensitive
    assert parse_features(c.cmd("FEAT"))["HASH"] == "SHA-256;SHA-512*;SHA-1;MD5;CRC32"
    reply = c.cmd("OPTS HASH CRC-37")
    assert reply.code == 501 and "current selection not changed" in reply.text
    assert "SHA-256, SHA-512, SHA-1, MD5, CRC32" in reply.text
    assert c.cmd("OPTS HASH").text == "SHA-512"
    other = login(srv)  # the choice is the session's own
    assert other.cmd("OPTS HASH").text == "SHA-256"
    assert c.cmd("RANG 5 9").code == 350
    assert c.cmd("REIN").code == 220  # the draft: the selection holds until the session is reinitialized
    c.login()
    assert c.cmd("OPTS HASH").text == "SHA-256"
    assert c.cmd("HASH mib.bin").text.startswith(f"SHA-256 0-{MIB - 1} ")  # and the range is gone


def test_hash_byte_ranges_with_rang(srv: RunningServer, files: Path) -> None:
    data = (files / "mib.bin").read_bytes()
    c = login(srv)
    assert c.cmd("RANG 0 0").code == 350
    assert parse_hash_reply(c.cmd("HASH mib.bin")).digest == hashlib.sha256(data[:1]).hexdigest()
    assert c.cmd("RANG 1000 1999").code == 350
    reply = c.cmd("HASH mib.bin")
    assert reply.text == f"SHA-256 1000-1999 {hashlib.sha256(data[1000:2000]).hexdigest()} mib.bin"
    reply = c.cmd("HASH mib.bin")  # the range stays until reset
    assert reply.text.startswith("SHA-256 1000-1999 ")
    assert c.cmd(f"RANG {MIB - 10} {10 * MIB}").code == 350  # past the end: to the end (as RETR)
    tail = hashlib.sha256(data[-10:]).hexdigest()
    assert c.cmd("HASH mib.bin").text == f"SHA-256 {MIB - 10}-{MIB - 1} {tail} mib.bin"
    assert c.cmd(f"RANG {MIB} {MIB + 5}").code == 350
    reply = c.cmd("HASH mib.bin")
    assert reply.code == 501 and f"({MIB} bytes)" in reply.text and "RANG 1 0 resets" in reply.text
    assert c.cmd("RANG 1 0").code == 350
    assert c.cmd("HASH mib.bin").text.startswith(f"SHA-256 0-{MIB - 1} {hashlib.sha256(data).hexdigest()}")
    assert c.cmd("RANG 10 20").code == 350
    reply = c.cmd("RANG 20 10")  # invalid: refused and reset
    assert reply.code == 501 and "reset" in reply.text
    assert c.cmd("HASH mib.bin").text.startswith(f"SHA-256 0-{MIB - 1} ")
    for bad in ("RANG", "RANG 1", "RANG a b", "RANG -1 5", "RANG 1 2 3"):
        reply = c.cmd(bad)
        assert reply.code == 501 and "RANG start end" in reply.text, (bad, reply)


def test_x_commands_take_a_byte_range_end_exclusive(srv: RunningServer, files: Path) -> None:
    data = (files / "mib.bin").read_bytes()
    c = login(srv)
    assert c.cmd("XMD5 mib.bin 0 10").text == hashlib.md5(data[:10]).hexdigest().upper()
    assert c.cmd(f"XCRC mib.bin 5 {MIB}").text == crc32(data[5:]).upper()
    assert c.cmd('XSHA1 "with space.txt" 0 6').text == hashlib.sha1(b"spaced").hexdigest().upper()
    assert c.cmd("XSHA1 with space.txt").text == hashlib.sha1(b"spaced out\n").hexdigest().upper()
    assert c.cmd('XSHA256 "with space.txt"').text == hashlib.sha256(b"spaced out\n").hexdigest().upper()
    for bad in (f"XMD5 mib.bin 0 {MIB + 1}", "XMD5 mib.bin 10 10", "XMD5 mib.bin 20 10"):
        reply = c.cmd(bad)
        assert reply.code == 501 and "START < END <= the size" in reply.text and f"({MIB} bytes)" in reply.text


def test_hash_accepts_a_quoted_name_as_winscp_sends_it(srv: RunningServer) -> None:
    c = login(srv)
    reply = c.cmd('HASH "with space.txt"')
    digest = hashlib.sha256(b"spaced out\n").hexdigest()
    assert reply.text == f"SHA-256 0-10 {digest} with space.txt"


def test_the_size_limit_refuses_before_reading(servers: ServerThread, files: Path) -> None:
    srv = servers.start(files, users=["alice:secret"], hash_max_size=1000)
    c = login(srv)
    reply = c.cmd("HASH mib.bin")
    assert reply.code == 556 and f"{MIB} bytes" in reply.text and "hash_max_size 1000" in reply.text
    assert c.cmd("XSHA256 mib.bin").code == 550
    assert c.cmd("RANG 0 999").code == 350
    assert c.cmd("HASH mib.bin").code == 213  # exactly the limit
    assert c.cmd("RANG 0 1000").code == 350
    assert c.cmd("HASH mib.bin").code == 556
    assert c.cmd("XSHA256 mib.bin 24 1024").code == 250


def test_a_10_gib_hash_is_refused_at_once_by_default(servers: ServerThread, tmp_path: Path) -> None:
    with (tmp_path / "huge.bin").open("wb") as fh:
        fh.truncate(10 << 30)  # sparse: no disk used
    srv = servers.start(tmp_path, users=["alice:secret"])
    c = login(srv)
    reply = c.cmd("HASH huge.bin")
    assert reply.code == 556 and "hash_max_size 4294967296" in reply.text
    assert c.cmd("XCRC huge.bin").code == 550
    assert c.cmd("NOOP").code == 200


def test_hash_can_be_turned_off(servers: ServerThread, files: Path) -> None:
    srv = servers.start(files, users=["alice:secret"], hash_enabled=False)
    c = login(srv)
    features = parse_features(c.cmd("FEAT"))
    assert "HASH" not in features and "XSHA256" not in features and "MFMT" in features
    for line in ("HASH one", "XSHA1 one", "XCRC one", "OPTS HASH", "RANG 0 1"):
        reply = c.cmd(line)
        assert reply.code == 502 and "hash_enabled" in reply.text, (line, reply)


def test_refusals(srv: RunningServer, files: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"not yours")
    link = files / "escape"
    link.symlink_to(outside)
    try:
        anonymous = Raw(srv.host, srv.port)
        assert anonymous.cmd("HASH one").code == 530  # not logged in
        anonymous.login("anonymous", "x@")
        assert anonymous.cmd("HASH one").code == 213  # read-only users may ask
        c = login(srv)
        assert c.cmd("HASH dir").code == 553  # the draft's reply for a directory
        assert c.cmd("XSHA1 dir").code == 550
        assert c.cmd("HASH missing").code == 550
        for line in ("HASH escape", "XSHA1 escape", "HASH ../../../../etc/passwd"):
            reply = c.cmd(line)
            assert reply.code == 550, (line, reply)
        assert c.cmd("HASH").code == 501  # needs an argument
    finally:
        link.unlink()


# --- concurrency -----------------------------------------------------------------------------------------------


class CountingStorage(LocalStorage):
    """Counts digests running at once: per session (one storage per session) and server-wide (shared)."""

    shared_lock = threading.Lock()
    running = 0
    most = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.here = 0
        self.most_here = 0

    async def digest(self, vpath: str, algorithm: str, start: int, end: int) -> str:
        cls = type(self)
        self.here += 1
        self.most_here = max(self.most_here, self.here)
        with cls.shared_lock:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        try:
            return await super().digest(vpath, algorithm, start, end)
        finally:
            self.here -= 1
            with cls.shared_lock:
                cls.running -= 1


@pytest.fixture
def counting() -> Iterator[tuple[type[CountingStorage], list[CountingStorage]]]:
    made: list[CountingStorage] = []

    class Storage(CountingStorage):
        running = 0
        most = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Storage, made


def test_one_digest_at_a_time_per_session_the_next_waits(servers: ServerThread, files: Path, counting: Any) -> None:
    storage, made = counting
    srv = servers.start(files, storage_factory=storage, users=["alice:secret"])
    c = login(srv)
    c.send(b"HASH big.bin\r\nXSHA1 mib.bin\r\nHASH one\r\nNOOP\r\n")  # pipelined: all four arrive at once
    replies = [c.reply() for _ in range(4)]
    assert [r.code for r in replies] == [213, 250, 213, 200]
    assert parse_hash_reply(replies[0]).digest == expected_of_file(files / "big.bin", "SHA-256")
    assert replies[1].text == expected_of_file(files / "mib.bin", "SHA-1").upper()
    assert made[0].most_here == 1


def test_server_wide_a_quarter_of_the_io_threads(servers: ServerThread, files: Path, counting: Any) -> None:
    storage, _ = counting
    srv = servers.start(files, storage_factory=storage, users=["alice:secret"], io_threads=4)  # one at a time
    sessions = [login(srv) for _ in range(3)]
    for c in sessions:
        c.send("HASH big.bin")
    want = expected_of_file(files / "big.bin", "SHA-256")
    for c in sessions:
        reply = c.reply()
        assert reply.code == 213 and parse_hash_reply(reply).digest == want
    assert storage.most == 1


def test_a_cancelled_digest_stops_reading(tmp_path: Path) -> None:
    """At shutdown the sessions' tasks are cancelled: the worker thread stops at its next chunk, it does not read
    10 GiB to the end."""
    size = 10 << 30
    with (tmp_path / "huge.bin").open("wb") as fh:
        fh.truncate(size)
    started = threading.Event()
    read = [0]

    class Counting:
        def __init__(self, fh: BinaryIO) -> None:
            self.fh = fh

        def readinto(self, buffer: Any) -> int:
            started.set()
            count = self.fh.readinto(buffer)  # type: ignore[attr-defined]
            read[0] += count
            return count

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

    class Storage(LocalStorage):
        def _open_read(self, vpath: str, offset: int) -> tuple[BinaryIO, int]:
            fh, length = super()._open_read(vpath, offset)
            return Counting(fh), length  # type: ignore[return-value]

    executor = ThreadPoolExecutor(2)

    async def main() -> None:
        storage = Storage(tmp_path, executor)
        task = asyncio.create_task(storage.digest("/huge.bin", "SHA-256", 0, size))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    executor.shutdown(wait=True)  # returns when the worker thread has ended
    assert 0 < read[0] < size


# --- MFMT, MFF, SITE CHMOD -------------------------------------------------------------------------------------


def test_mfmt_sets_the_modification_time(server: RunningServer, tree: Path) -> None:
    c = login(server)
    atime = os.stat(tree / "hello.txt").st_atime_ns
    reply = c.cmd("MFMT 20200102030405 hello.txt")
    assert (reply.code, reply.text) == (213, "Modify=20200102030405; hello.txt")
    assert os.stat(tree / "hello.txt").st_mtime == 1577934245
    assert os.stat(tree / "hello.txt").st_atime_ns == atime  # only the modification time changes
    assert c.cmd("MDTM hello.txt").text == "20200102030405"
    assert c.cmd("MFMT 20200102030405.123 hello.txt").code == 213
    assert os.stat(tree / "hello.txt").st_mtime_ns == 1577934245_123000000
    assert c.cmd("MFMT 19991231235959 sub").code == 213  # directories too
    assert os.stat(tree / "sub").st_mtime == 946684799
    assert c.cmd("MFMT 20240229120000 日本語ファイル.txt").code == 213  # a leap day, a UTF-8 name


@pytest.mark.parametrize("arg", ["2020 hello.txt", "20201302030405 hello.txt", "20200230030405 hello.txt",
                                 "20200102240000 hello.txt", "20200102036005 hello.txt", "2020010203040x hello.txt",
                                 "20200102030405.1234567890 hello.txt", "00000102030405 hello.txt",
                                 "20200102030405", "-20200102030405 hello.txt"])
def test_mfmt_malformed_timestamps_get_501_naming_the_format(server: RunningServer, tree: Path, arg: str) -> None:
    before = os.stat(tree / "hello.txt").st_mtime_ns
    reply = login(server).cmd(f"MFMT {arg}")
    assert reply.code == 501 and "YYYYMMDDHHMMSS" in reply.text, reply
    assert len(reply.lines) == 1
    assert os.stat(tree / "hello.txt").st_mtime_ns == before


def test_mfmt_mff_chmod_need_write_permission_and_stay_home(server: RunningServer, tree: Path,
                                                            tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"x")
    (tree / "escape").symlink_to(outside)
    before = os.stat(outside)
    anonymous = Raw(server.host, server.port)
    anonymous.login("anonymous", "x@")
    for line in ("MFMT 20200102030405 hello.txt", "MFF modify=20200102030405; hello.txt", "SITE CHMOD 600 hello.txt"):
        reply = anonymous.cmd(line)
        assert reply.code == 550 and "read-only" in reply.text, (line, reply)
    assert anonymous.cmd("AVBL").code == 213  # asking is fine
    c = login(server)
    for line in ("MFMT 20200102030405 escape", "MFF UNIX.mode=0600; escape", "SITE CHMOD 600 escape",
                 "MFMT 20200102030405 /", "SITE CHMOD 000 /", "SITE CHMOD 000 ../..", "MFF UNIX.mode=000; .",
                 "MFMT 20200102030405 missing", "SITE CHMOD 600 missing"):
        reply = c.cmd(line)
        assert reply.code == 550, (line, reply)
    after = os.stat(outside)
    assert (after.st_mtime_ns, after.st_mode) == (before.st_mtime_ns, before.st_mode)
    assert stat.S_IMODE(os.stat(tree).st_mode) != 0


def test_mff_sets_time_and_mode_together(server: RunningServer, tree: Path) -> None:
    c = login(server)
    reply = c.cmd("MFF Modify=20210304050607;UNIX.mode=0600; hello.txt")
    assert (reply.code, reply.text) == (213, "modify=20210304050607;UNIX.mode=0600; hello.txt")
    st = os.stat(tree / "hello.txt")
    assert st.st_mtime == 1614834367 and stat.S_IMODE(st.st_mode) == 0o600
    assert c.cmd("MFF unix.MODE=755; sub").text == "UNIX.mode=0755; sub"
    assert stat.S_IMODE(os.stat(tree / "sub").st_mode) == 0o755


@pytest.mark.parametrize(("arg", "code", "words"), [
    ("create=20210304050607; hello.txt", 504, "MFF changes modify and UNIX.mode"),
    ("UNIX.owner=0;modify=20210304050607; hello.txt", 504, "Nothing was changed"),
    ("modify=2021; hello.txt", 501, "YYYYMMDDHHMMSS"),
    ("UNIX.mode=4755; hello.txt", 501, "000-777"),
    ("UNIX.mode=9; hello.txt", 501, "000-777"),
    ("modify=20210304050607;modify=20210304050607; hello.txt", 501, "twice"),
    ("modify; hello.txt", 501, "name=value"),
    ("modify=20210304050607;", 501, "MFF fact=value; path"),
])
def test_mff_bad_input_changes_nothing(server: RunningServer, tree: Path, arg: str, code: int, words: str) -> None:
    before = os.stat(tree / "hello.txt")
    reply = login(server).cmd(f"MFF {arg}")
    assert reply.code == code and words in reply.text, reply
    after = os.stat(tree / "hello.txt")
    assert (after.st_mtime_ns, after.st_mode) == (before.st_mtime_ns, before.st_mode)


def test_site_chmod(server: RunningServer, tree: Path) -> None:
    c = login(server)
    for text, mode in (("600", 0o600), ("0644", 0o644), ("7", 0o007), ("755", 0o755)):
        reply = c.cmd(f"SITE CHMOD {text} hello.txt")
        assert reply.code == 200, reply
        assert stat.S_IMODE(os.stat(tree / "hello.txt").st_mode) == mode
    assert c.cmd("site chmod 700 日本語ファイル.txt").code == 200
    assert stat.S_IMODE(os.stat(tree / "日本語ファイル.txt").st_mode) == 0o700
    for bad in ("4755", "1777", "2755", "888", "abc", "07777", "-1", "+x"):
        reply = c.cmd(f"SITE CHMOD {bad} hello.txt")
        assert reply.code == 501 and "000-777" in reply.text, (bad, reply)
    assert stat.S_IMODE(os.stat(tree / "hello.txt").st_mode) == 0o755
    for bad in ("SITE CHMOD", "SITE CHMOD 644"):
        reply = c.cmd(bad)
        assert reply.code == 501 and "SITE CHMOD 644 path" in reply.text


class NoModesStorage(LocalStorage):
    """A backend without modes or free-space figures (object storage will be like this)."""

    async def chmod(self, vpath: str, mode: int) -> bool:
        await self.stat(vpath)
        return False

    async def free_space(self, vpath: str) -> int | None:
        await self.stat(vpath)
        return None


def test_a_storage_without_modes_says_so(servers: ServerThread, tree: Path) -> None:
    srv = servers.start(tree, storage_factory=NoModesStorage, users=["alice:secret"])
    before = stat.S_IMODE(os.stat(tree / "hello.txt").st_mode)
    c = login(srv)
    reply = c.cmd("SITE CHMOD 600 hello.txt")
    assert reply.code == 200 and "keeps no modes; nothing was changed" in reply.text
    assert c.cmd("MFF UNIX.mode=0600; hello.txt").code == 504
    assert c.cmd("MFF UNIX.mode=0600;modify=20200102030405; hello.txt").text == "modify=20200102030405; hello.txt"
    assert stat.S_IMODE(os.stat(tree / "hello.txt").st_mode) == before
    reply = c.cmd("AVBL")
    assert reply.code == 502 and "cannot tell" in reply.text


# --- AVBL ------------------------------------------------------------------------------------------------------


def test_avbl_is_the_free_space_of_the_folders_file_system(server: RunningServer, tree: Path) -> None:
    c = login(server)
    for _ in range(20):  # the file system is shared: take a reading while nothing else changed it
        st = os.statvfs(tree / "sub")
        reply = c.cmd("AVBL sub")
        again = os.statvfs(tree / "sub")
        if st.f_bavail == again.f_bavail:
            assert (reply.code, reply.text) == (213, str(st.f_bavail * st.f_frsize))
            break
    else:
        pytest.fail("the file system's free space never held still")
    assert c.cmd("AVBL").code == 213  # the current directory
    for bad in ("AVBL hello.txt", "AVBL missing"):
        reply = c.cmd(bad)
        assert reply.code == 550, (bad, reply)
