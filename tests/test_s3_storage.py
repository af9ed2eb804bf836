"""The server on S3 object storage (a real SeaweedFS), driven by ftplib and raw commands. Every result is checked in
the bucket itself: the objects a client uploaded, the markers of directories, that a failed or aborted upload left
neither a visible object nor a multipart upload, and which S3 operations the server used (the S3 library's own
event hooks), so a resumed upload is proven to copy the stored bytes on the service's side.
"""

from __future__ import annotations

import asyncio
import ftplib
import io
import itertools
import os
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from ftpkit.server.accounts import add_user
from s3server import JP_DIR, JP_FILE, TREE_RANDOM

MIB = 1 << 20
ROOT_NAMES = {"hello.txt", "random.bin", "sub", JP_DIR, JP_FILE}


def connect(server: Any, user: str = "alice", password: str = "secret") -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=30, encoding="utf-8")
    ftp.connect(server.host, server.port)
    ftp.login(user, password)
    return ftp


@pytest.fixture
def ftp(s3_server: Any) -> Iterator[ftplib.FTP]:
    client = connect(s3_server)
    yield client
    client.close()


def retr(ftp: ftplib.FTP, path: str, rest: int | None = None) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {path}", out.write, rest=rest)
    return out.getvalue()


class Operations:
    """The S3 operations the server calls, with their parameters (botocore's ``before-parameter-build`` events
    on the server's client)."""

    def __init__(self, server: Any) -> None:
        self.names: list[str] = []
        self.params: list[dict[str, Any]] = []
        server.server.s3.client.meta.events.register("before-parameter-build.s3", self._seen)

    def _seen(self, model: Any, params: Any, **_: Any) -> None:
        self.names.append(model.name)
        self.params.append(params)

    def clear(self) -> None:
        self.names.clear()
        self.params.clear()


# --- transfers ---------------------------------------------------------------------------------------------------


def test_get_and_put_are_byte_exact_in_the_bucket(ftp, bucket):
    assert retr(ftp, "random.bin") == TREE_RANDOM
    big = os.urandom(20 * MIB + 12345)  # three parts of a multipart upload
    assert ftp.storbinary("STOR big.bin", io.BytesIO(big)).startswith("226")
    assert bucket.get("big.bin") == big
    assert retr(ftp, "big.bin") == big
    ftp.storbinary("STOR empty.bin", io.BytesIO(b""))
    assert bucket.get("empty.bin") == b""
    assert retr(ftp, "empty.bin") == b""
    ftp.storbinary(f"STOR {JP_DIR}/小さい.txt", io.BytesIO("中身\n".encode()))
    assert bucket.get(f"{JP_DIR}/小さい.txt") == "中身\n".encode()
    assert bucket.uploads() == []


def test_ascii_mode_converts_line_ends_both_ways(ftp, bucket):
    ftp.storlines("STOR text.txt", io.BytesIO(b"one\ntwo\n"))  # ftplib sends CRLF in TYPE A
    assert bucket.get("text.txt") == b"one\ntwo\n"
    got: list[str] = []
    ftp.retrlines("RETR text.txt", got.append)
    assert got == ["one", "two"]


def test_download_restart_is_a_ranged_get(s3_server, ftp):
    ops = Operations(s3_server)
    assert retr(ftp, "random.bin", rest=300000) == TREE_RANDOM[300000:]
    ranges = [p.get("Range") for name, p in zip(ops.names, ops.params, strict=True) if name == "GetObject"]
    assert ranges == ["bytes=300000-"], ops.names
    assert retr(ftp, "random.bin", rest=len(TREE_RANDOM)) == b""  # at the end: nothing, as with a file
    assert retr(ftp, "random.bin", rest=len(TREE_RANDOM) + 5) == b""


def test_resumed_upload_copies_the_stored_bytes_on_the_service_side(s3_server, ftp, bucket):
    """REST n + STOR and APPE of a large object send only the new bytes: UploadPartCopy of the stored range, then
    the new parts; nothing is read back through the server."""
    old = os.urandom(12 * MIB)
    bucket.put("resume.bin", old)
    ops = Operations(s3_server)
    tail = os.urandom(9 * MIB)
    ftp.voidcmd("TYPE I")
    assert ftp.storbinary("STOR resume.bin", io.BytesIO(tail), rest=10 * MIB).startswith("226")
    assert bucket.get("resume.bin") == old[:10 * MIB] + tail
    assert "UploadPartCopy" in ops.names and "GetObject" not in ops.names, ops.names
    copied = [p["CopySourceRange"] for name, p in zip(ops.names, ops.params, strict=True) if name == "UploadPartCopy"]
    assert copied == [f"bytes=0-{10 * MIB - 1}"]

    ops.clear()
    more = b"appended"
    ftp.storbinary("APPE resume.bin", io.BytesIO(more))
    assert bucket.get("resume.bin") == old[:10 * MIB] + tail + more
    assert "UploadPartCopy" in ops.names and "GetObject" not in ops.names, ops.names
    assert bucket.uploads() == []


def test_resuming_a_small_object_reads_it_back_and_beyond_the_end_is_refused(s3_server, ftp, bucket):
    """Under 5 MiB a stored prefix cannot be a part followed by others: it is read back into the first part."""
    ftp.storbinary("APPE small.txt", io.BytesIO(b"abc"))
    ftp.storbinary("APPE small.txt", io.BytesIO(b"def"))
    assert bucket.get("small.txt") == b"abcdef"
    ftp.voidcmd("TYPE I")
    ftp.storbinary("STOR small.txt", io.BytesIO(b"XY"), rest=2)
    assert bucket.get("small.txt") == b"abXY"
    with pytest.raises(ftplib.error_perm, match=r"^554 .*restart offset 99 is beyond the 4 bytes stored so far"):
        ftp.storbinary("STOR small.txt", io.BytesIO(b"zz"), rest=99)
    assert bucket.get("small.txt") == b"abXY"


def test_aborted_upload_leaves_the_old_version_and_no_multipart_upload(ftp, bucket):
    """ABOR after 20 MiB (parts already sent): 426 + 226, the object is still the old one, the multipart upload
    is aborted, and SIZE tells the old size (there is no partial to resume on object storage)."""
    bucket.put("keep.bin", b"old version")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR keep.bin")
    block = os.urandom(MIB)
    for _ in range(20):
        conn.sendall(block)
    ftp.putcmd("ABOR")  # not ftp.abort(): it sends the line as urgent data (see the report on SO_OOBINLINE)
    assert ftp.getmultiline().startswith("426")
    assert ftp.getmultiline().startswith("226")
    conn.close()
    assert bucket.get("keep.bin") == b"old version"
    assert bucket.uploads() == []
    assert ftp.size("keep.bin") == len(b"old version")
    assert ftp.storbinary("STOR keep.bin", io.BytesIO(b"new")).startswith("226")  # the session goes on
    assert bucket.get("keep.bin") == b"new"


def test_reset_mid_upload_leaves_nothing_visible(ftp, bucket):
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR never.bin")
    conn.sendall(os.urandom(18 * MIB))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = reset
    conn.close()
    with pytest.raises(ftplib.error_temp, match=r"^426 "):
        ftp.voidresp()
    assert "never.bin" not in bucket.list()
    assert bucket.uploads() == []


def test_stou_picks_an_unused_name(ftp, bucket):
    reply = ftp.storbinary("STOU hello.txt", io.BytesIO(b"unique"))
    assert "hello.txt.1" in reply, reply
    assert bucket.get("hello.txt.1") == b"unique"
    assert bucket.get("hello.txt") == b"hello\nworld\n"


# --- directories, names, listings --------------------------------------------------------------------------------


def test_listings_show_objects_and_prefixes(ftp):
    assert set(ftp.nlst()) == ROOT_NAMES
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    kinds = {line.rsplit(" ", 1)[1]: line[0] for line in lines}
    assert kinds == {"hello.txt": "-", "random.bin": "-", "sub": "d", JP_DIR: "d", JP_FILE: "-"}, lines
    assert any(line.endswith(" random.bin") and f" {len(TREE_RANDOM)} " in line for line in lines), lines
    facts = dict(ftp.mlsd())
    assert {name: f["type"] for name, f in facts.items()} == {"hello.txt": "file", "random.bin": "file",
                                                               "sub": "dir", JP_DIR: "dir", JP_FILE: "file"}
    assert facts["random.bin"]["size"] == str(len(TREE_RANDOM))
    assert ftp.nlst("sub") == ["inner.txt"] or ftp.nlst("sub") == ["sub/inner.txt"]
    assert ftp.nlst(JP_DIR) == []  # a marker only
    assert sorted(ftp.nlst("*.txt")) == sorted(["hello.txt", JP_FILE])


def test_directories_are_prefixes(ftp, bucket):
    assert ftp.cwd("sub").startswith("250")  # exists through its object only
    assert ftp.pwd() == "/sub"
    ftp.cwd("/")
    for target in ("nowhere", "hello.txt"):
        with pytest.raises(ftplib.error_perm, match=r"^550 "):
            ftp.cwd(target)
    assert ftp.mkd("new") == "/new"
    assert "new/" in bucket.list()
    ftp.cwd("new")
    ftp.storbinary("STOR in.txt", io.BytesIO(b"x"))
    ftp.cwd("/")
    for bad, why in (("MKD new", "File exists"), ("MKD hello.txt", "File exists"), ("MKD a/b", "No such file"),
                     ("RMD new", "not empty"), ("RMD nowhere", "No such file"), ("DELE new", "Is a directory"),
                     ("DELE nowhere.txt", "No such file"), ("SIZE new", "plain files")):
        with pytest.raises(ftplib.error_perm, match=f"^550 .*{why}"):
            ftp.sendcmd(bad)
    with pytest.raises(ftplib.error_perm, match=r"^550 "):
        ftp.storbinary("STOR missing/x.txt", io.BytesIO(b"x"))
    with pytest.raises(ftplib.error_perm, match=r"^550 .*Is a directory"):
        ftp.storbinary("STOR new", io.BytesIO(b"x"))
    ftp.delete("new/in.txt")
    assert ftp.rmd("new").startswith("250")
    assert not [key for key in bucket.list() if key.startswith("new")]


def test_size_and_mdtm_come_from_head(ftp, bucket):
    assert ftp.size("random.bin") == len(TREE_RANDOM)
    reply = ftp.sendcmd("MDTM random.bin")
    modified = asyncio.run_coroutine_threadsafe(
        bucket.client.head_object(Bucket=bucket.name, Key=bucket.prefix + "random.bin"), bucket._loop,
    ).result(30)["LastModified"]
    assert reply == "213 " + modified.strftime("%Y%m%d%H%M%S")


def test_rename_is_copy_then_delete(ftp, bucket):
    ftp.rename("hello.txt", "sub/b.txt")
    ftp.rename(JP_FILE, f"{JP_DIR}/改名.txt")
    keys = bucket.list()
    assert "hello.txt" not in keys and JP_FILE not in keys
    assert bucket.get("sub/b.txt") == b"hello\nworld\n"
    assert bucket.get(f"{JP_DIR}/改名.txt") == "こんにちは\n".encode()
    with pytest.raises(ftplib.error_perm, match=r"^550 .*renaming a directory is not supported"):
        ftp.rename("sub", "elsewhere")
    with pytest.raises(ftplib.error_perm, match=r"^550 .*Is a directory"):
        ftp.rename("random.bin", "sub")
    assert bucket.get("random.bin") == TREE_RANDOM


def test_a_listing_is_read_page_by_page(s3_server, ftp, bucket):
    """Seven keys per ListObjectsV2 page: 250 entries, files and prefixes mixed, come out complete and sorted."""
    names = [f"n{i:03d}" for i in range(250)]
    bucket.put_many([f"many/{n}.txt" if i % 3 else f"many/{n}/x" for i, n in enumerate(names)])
    s3_server.server.s3.page_size = 7
    ops = Operations(s3_server)
    listed = ftp.nlst("many")
    assert [posixname(name) for name in listed] == [f"{n}.txt" if i % 3 else n for i, n in enumerate(names)]
    assert ops.names.count("ListObjectsV2") >= 250 // 7


def posixname(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def test_a_big_listing_is_sent_with_flat_memory(s3_server, ftp, bucket):
    """Peak memory while listing 3,000 objects is not much more than while listing 300 (pages of 50): the server
    never holds a whole listing (holding it, the peak grows about 3 times here)."""
    long = "x" * 200
    bucket.put_many([f"few/f{i:05d}-{long}" for i in range(300)] + [f"lots/f{i:05d}-{long}" for i in range(3000)])
    s3_server.server.s3.page_size = 50
    ftp.retrlines("LIST few", lambda line: None)  # warm-up: the S3 library loads its models once

    def peak(path: str) -> tuple[int, int]:
        count = [0]
        tracemalloc.start()
        try:
            ftp.retrlines(f"LIST {path}", lambda line: count.__setitem__(0, count[0] + 1))
            return tracemalloc.get_traced_memory()[1], count[0]
        finally:
            tracemalloc.stop()

    small, n_small = peak("few")
    large, n_large = peak("lots")
    assert (n_small, n_large) == (300, 3000)
    assert large < 2 * small, (small, large)


# --- homes -------------------------------------------------------------------------------------------------------


def test_a_users_home_is_a_prefix(servers, bucket, tmp_path):
    """A users-file home relative to the root is that prefix below the configured one (no folder needed)."""
    users = tmp_path / "users.toml"
    add_user(users, "bob", "pw", "homes/bob", write=True)
    root = tmp_path / "root"
    root.mkdir()
    server = servers.start(root, users_file=str(users), anonymous=True, **bucket.weed.settings(bucket.prefix))
    bob = connect(server, "bob", "pw")
    assert bob.nlst() == []
    bob.storbinary("STOR mine.txt", io.BytesIO(b"bob's"))
    assert bob.pwd() == "/"
    bob.quit()
    assert bucket.get("homes/bob/mine.txt") == b"bob's"
    anon = connect(server, "anonymous", "x@example.com")
    assert "homes" in anon.nlst()
    assert retr(anon, "homes/bob/mine.txt") == b"bob's"
    with pytest.raises(ftplib.error_perm, match=r"^550 "):
        anon.storbinary("STOR homes/bob/mine.txt", io.BytesIO(b"overwrite"))
    anon.quit()


def test_a_name_that_is_not_utf8_is_refused(s3_server):
    from rawftp import Raw

    raw = Raw(s3_server.host, s3_server.port)
    raw.login()
    reply = raw.cmd(b"MKD caf\xe9\r\n")
    assert reply.code == 550 and "UTF-8" in reply.text, reply


def test_startup_sweeper_aborts_stale_multipart_uploads(s3_server, bucket):
    """A multipart upload left by a killed server is aborted by the sweep (here with age 0)."""
    stale = bucket.run(bucket.client.create_multipart_upload(Bucket=bucket.name, Key=bucket.prefix + "left.bin"))
    assert stale["UploadId"]
    assert bucket.uploads() == ["left.bin"]
    removed = asyncio.run_coroutine_threadsafe(s3_server.server.s3.sweep_uploads(0), s3_server.loop).result(60)
    assert removed >= 1
    assert bucket.uploads() == []


def test_copy_ranges_cover_the_object_in_valid_parts():
    from ftpkit.server.s3.transfers import MAX_COPY_PART, MIN_PART, split_ranges

    for length in (MIN_PART, MIN_PART + 1, MAX_COPY_PART - 1, MAX_COPY_PART, MAX_COPY_PART + 1, 5 * MAX_COPY_PART + 7):
        ranges = split_ranges(length, MAX_COPY_PART)
        assert ranges[0][0] == 0 and ranges[-1][1] == length - 1
        assert all(high + 1 == low for (_, high), (low, _) in itertools.pairwise(ranges))
        assert all(MIN_PART <= high - low + 1 <= MAX_COPY_PART for low, high in ranges), (length, ranges)


def test_renaming_an_object_too_big_for_one_copy_copies_it_in_parts(s3_server, ftp, bucket, monkeypatch):
    """Over CopyObject's limit (5 GiB; lowered here to 1 MiB, with ranges of at most 8 MiB) a rename is a multipart
    upload of ranged part copies, then the delete."""
    import ftpkit.server.s3.storage as s3storage

    monkeypatch.setattr(s3storage, "SINGLE_COPY_LIMIT", MIB)
    monkeypatch.setattr(s3storage, "MAX_COPY_PART", 8 * MIB)
    data = os.urandom(12 * MIB + 99)
    bucket.put("large.bin", data)
    ops = Operations(s3_server)
    ftp.rename("large.bin", "sub/large.bin")
    assert bucket.get("sub/large.bin") == data
    assert "large.bin" not in bucket.list()
    assert ops.names.count("UploadPartCopy") == 2 and "CopyObject" not in ops.names, ops.names
    assert bucket.uploads() == []


def test_hash_streams_a_ranged_get_and_mfmt_and_avbl_say_why_not(ftp):
    """HASH and the X commands digest a ranged GET; MFMT is refused with the reason (S3 sets the times); AVBL cannot
    tell; a directory has no digest."""
    import hashlib

    assert ftp.sendcmd("XSHA256 random.bin") == "250 " + hashlib.sha256(TREE_RANDOM).hexdigest().upper()
    part = ftp.sendcmd("XSHA256 random.bin 1000 500000")
    assert part == "250 " + hashlib.sha256(TREE_RANDOM[1000:500000]).hexdigest().upper()
    with pytest.raises(ftplib.error_perm, match=r"^550 .*object storage sets an object's time itself"):
        ftp.sendcmd("MFMT 20200102030405 hello.txt")
    with pytest.raises(ftplib.error_perm, match=r"^550 sub: XSHA256 works on plain files only"):
        ftp.sendcmd("XSHA256 sub")
    with pytest.raises(ftplib.error_perm, match=r"^502 AVBL: this storage cannot tell its free space"):
        ftp.sendcmd("AVBL")
