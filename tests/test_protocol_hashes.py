"""The digest codecs of the protocol core: algorithm names, FEAT's HASH line, HASH and X replies as real servers send
them (ftpkit, ProFTPD mod_digest, SFTPGo, FileZilla Server's older form), the client's choice of method, and the one
streaming hash both sides use, against hashlib and zlib."""

from __future__ import annotations

import hashlib
import os
import zlib

import pytest

from ftpkit.protocol.errors import ReplyError
from ftpkit.protocol.hashes import (
    ALGORITHMS,
    HashMethod,
    HashResult,
    choose_method,
    format_hash_feature,
    format_hash_reply,
    new_hash,
    normalize_algorithm,
    parse_hash_feature,
    parse_hash_reply,
    parse_x_reply,
)
from ftpkit.protocol.replies import Reply, ReplyReader


def reply_of(raw: bytes) -> Reply:
    (event,) = ReplyReader().feed(raw)
    assert isinstance(event, Reply)
    return event


@pytest.mark.parametrize(("name", "canonical"), [
    ("SHA-256", "SHA-256"), ("sha256", "SHA-256"), ("Sha-512", "SHA-512"), ("SHA1", "SHA-1"), ("md5", "MD5"),
    ("crc32", "CRC32"), ("CRC-32", "CRC32"), (" SHA-1 ", "SHA-1"), ("CRC-37", None), ("SHA-3", None), ("", None),
])
def test_algorithm_names_are_case_insensitive(name: str, canonical: str | None) -> None:
    assert normalize_algorithm(name) == canonical


@pytest.mark.parametrize("size", [0, 1, 4095, 1 << 20])
def test_new_hash_streams_the_same_digest_as_hashlib_and_zlib(size: int) -> None:
    data = os.urandom(size)
    want = {"SHA-256": hashlib.sha256(data).hexdigest(), "SHA-512": hashlib.sha512(data).hexdigest(),
            "SHA-1": hashlib.sha1(data).hexdigest(), "MD5": hashlib.md5(data).hexdigest(),
            "CRC32": f"{zlib.crc32(data):08x}"}
    for algorithm in ALGORITHMS:
        hasher = new_hash(algorithm)
        for i in range(0, size, 1000):  # in pieces, as a stream arrives
            hasher.update(memoryview(data)[i:i + 1000])
        assert hasher.hexdigest() == want[algorithm], algorithm
    with pytest.raises(ValueError, match="known: SHA-256, SHA-512, SHA-1, MD5, CRC32"):
        new_hash("SHA-3")


def test_crc32_keeps_its_leading_zeros() -> None:
    data = next(bytes([i]) * 3 for i in range(256) if zlib.crc32(bytes([i]) * 3) < 1 << 28)
    hasher = new_hash("CRC32")
    hasher.update(data)
    assert len(hasher.hexdigest()) == 8 and hasher.hexdigest().startswith("0")


def test_hash_feature_both_ways() -> None:
    assert format_hash_feature("SHA-256") == "SHA-256*;SHA-512;SHA-1;MD5;CRC32"
    assert format_hash_feature("MD5") == "SHA-256;SHA-512;SHA-1;MD5*;CRC32"
    assert parse_hash_feature("SHA-256*;SHA-512;SHA-1;MD5;CRC32") == (ALGORITHMS, "SHA-256")
    assert parse_hash_feature("SHA-1*;MD5;") == (("SHA-1", "MD5"), "SHA-1")  # the draft's trailing semicolons
    assert parse_hash_feature("sha-1;md5*; CRC32 ;") == (("SHA-1", "MD5", "CRC32"), "MD5")
    assert parse_hash_feature("SHA-1;TIGER") == (("SHA-1", "TIGER"), None)


@pytest.mark.parametrize(("raw", "want"), [
    (b"213 SHA-256 0-49 " + b"a" * 64 + b" filename.ext\r\n", HashResult("SHA-256", 0, 49, "a" * 64, "filename.ext")),
    # ProFTPD mod_digest: a first line, END = the size, the name as the client gave it
    (b"213-Computing MD5 digest\r\n213 MD5 0-687104 B359479CFDA703B7FD473C7E09F39049 dir/a b.bin\r\n",
     HashResult("MD5", 0, 687104, "b359479cfda703b7fd473c7e09f39049", "dir/a b.bin")),
    # SFTPGo (ftpserverlib): lower-case hex, a first line too
    (b"213-Computing SHA-1 digest\r\n213 SHA-1 0-5 " + b"f" * 40 + b" x\r\n", HashResult("SHA-1", 0, 5, "f" * 40, "x")),
    # FileZilla Server (draft-bryan-ftp-hash-06): no range, no name
    (b"213 SHA-1 " + b"0" * 40 + b"\r\n", HashResult("SHA-1", None, None, "0" * 40, "")),
    (b"213 CRC32 0-0 1c291ca3 one\r\n", HashResult("CRC32", 0, 0, "1c291ca3", "one")),
])
def test_hash_replies_of_real_servers(raw: bytes, want: HashResult) -> None:
    assert parse_hash_reply(reply_of(raw)) == want


@pytest.mark.parametrize(("raw", "words"), [
    (b"550 x: No such file or directory.\r\n", "HASH failed: 550"),
    (b"556 x: too big\r\n", "HASH failed: 556"),
    (b"213 SHA-256\r\n", "without a digest"),
    (b"213 SHA-256 0-1 nothex x\r\n", "without a hex digest"),
    (b"213 SHA-256 0-1 abcd x\r\n", "has 4 hex digits, not 64"),
])
def test_bad_hash_replies_are_one_line_errors(raw: bytes, words: str) -> None:
    with pytest.raises(ReplyError, match=words):
        parse_hash_reply(reply_of(raw))


def test_format_hash_reply_round_trips() -> None:
    text = format_hash_reply("SHA-1", 3, 9, "A" * 40, "dir/ファイル 1.txt")
    assert text == "SHA-1 3-9 " + "a" * 40 + " dir/ファイル 1.txt"
    assert parse_hash_reply(Reply(213, (text,))) == HashResult("SHA-1", 3, 9, "a" * 40, "dir/ファイル 1.txt")


@pytest.mark.parametrize(("raw", "algorithm", "want"), [
    (b"250 2AAE6C35C94FCFB415DBE95F408B9CE91EE846ED\r\n", "SHA-1", "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"),
    (b"250-Computing SHA1 digest\r\n250 2AAE6C35C94FCFB415DBE95F408B9CE91EE846ED\r\n", "SHA-1",
     "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"),
    (b"213 3610A686\r\n", "CRC32", "3610a686"),
    (b"250 610A686\r\n", "CRC32", "0610a686"),  # a CRC printed without its leading zero
    (b"251 x.bin 5D41402ABC4B2A76B9719D911017C592\r\n", "MD5", "5d41402abc4b2a76b9719d911017c592"),  # name first
])
def test_x_replies(raw: bytes, algorithm: str, want: str) -> None:
    assert parse_x_reply(reply_of(raw), algorithm) == want


@pytest.mark.parametrize("raw", [b"550 x: No such file.\r\n", b"250 Computing\r\n", b"250 ABC\r\n"])
def test_bad_x_replies(raw: bytes) -> None:
    with pytest.raises(ReplyError):
        parse_x_reply(reply_of(raw), "SHA-256")


@pytest.mark.parametrize(("features", "want"), [
    ({"HASH": "SHA-256*;SHA-512;SHA-1;MD5;CRC32"}, HashMethod("HASH", "SHA-256", select=False)),
    ({"HASH": "SHA-1*;SHA-512;MD5"}, HashMethod("HASH", "SHA-512", select=True)),
    ({"HASH": "SHA-1;SHA-256*;MD5"}, HashMethod("HASH", "SHA-256", select=False)),
    ({"HASH": "MD5*;CRC32"}, HashMethod("HASH", "MD5", select=False)),
    ({"HASH": "TIGER*", "XSHA1": ""}, HashMethod("XSHA1", "SHA-1")),  # nothing in common with HASH: an X command
    ({"XCRC": "filename;start;end", "XMD5": "", "XSHA256": ""}, HashMethod("XSHA256", "SHA-256")),
    ({"XSHA512": "", "XSHA1": ""}, HashMethod("XSHA512", "SHA-512")),
    ({"XCRC": ""}, HashMethod("XCRC", "CRC32")),
    ({"MDTM": "", "SIZE": ""}, None),
])
def test_the_client_picks_the_best_method_both_sides_have(features: dict[str, str], want: HashMethod | None) -> None:
    assert choose_method(features) == want


def test_the_client_can_ask_for_one_algorithm() -> None:
    features = {"HASH": "SHA-256*;SHA-1", "XCRC": ""}
    assert choose_method(features, "sha-1") == HashMethod("HASH", "SHA-1", select=True)
    assert choose_method(features, "SHA-256") == HashMethod("HASH", "SHA-256", select=False)
    assert choose_method(features, "crc32") == HashMethod("XCRC", "CRC32")
    assert choose_method(features, "MD5") is None
