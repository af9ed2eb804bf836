"""File digests over the control connection: HASH (draft-bryan-ftpext-hash-02) and the older X commands.

HASH uses the algorithm the session selected (``OPTS HASH SHA-512``; FEAT lists the algorithms, ``*`` after the
selected one) and answers ``213 SHA-256 0-49 <hex> <path>``: the algorithm, the byte range hashed (START-END,
END the last byte, inclusive, as in RANG of draft-bryan-ftp-range: an empty file is ``0-0``), the digest in lower
case, the path as the client gave it. ProFTPD prints END as the file's size instead, and some older servers leave
the range out (``213 SHA-1 <hex>``): the reader takes all of these.

The X commands name the algorithm in the verb (XCRC, XMD5, XSHA1, XSHA256, XSHA512, as WinSCP, ProFTPD mod_digest
and Serv-U have them), take an optional byte range ``XSHA1 path START END`` (END exclusive, as ProFTPD reads it)
and answer ``250 <HEX>``; the digest is the last word of the reply's last line (WinSCP reads it so too).

:func:`new_hash` gives the same streaming hash object for every algorithm (``CRC32`` included), used by the server
to answer and by the client to compare: one implementation, so both sides agree byte for byte.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ftpkit.protocol.errors import ReplyError
from ftpkit.protocol.replies import Reply

ALGORITHMS = ("SHA-256", "SHA-512", "SHA-1", "MD5", "CRC32")
"""Every algorithm, in the order FEAT lists them (IANA "Hash Function Textual Names"; CRC32 as ProFTPD names it)."""

DEFAULT_ALGORITHM = "SHA-256"
"""What HASH uses until OPTS HASH chooses another (the draft: never weaker than SHA-1 by default)."""

PREFERENCE = ("SHA-256", "SHA-512", "SHA-1", "MD5", "CRC32")
"""Best first: what a client picks among the algorithms both sides have. SHA-256 before SHA-512: as strong for
telling copies apart, faster where the CPU has SHA instructions, and the usual default (no OPTS HASH needed)."""

X_COMMANDS = {"XSHA256": "SHA-256", "XSHA512": "SHA-512", "XSHA1": "SHA-1", "XMD5": "MD5", "XCRC": "CRC32"}
"""The algorithm-specific commands and their algorithms, best first."""

HEX_LENGTH = {"SHA-256": 64, "SHA-512": 128, "SHA-1": 40, "MD5": 32, "CRC32": 8}

_ALIASES = {name.replace("-", ""): name for name in ALGORITHMS} | {"CRC": "CRC32"}
_HEX = re.compile(r"[0-9a-fA-F]+")


class Hasher(Protocol):
    """What :func:`new_hash` returns: hashlib's interface (``update``, ``hexdigest``)."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class _CRC32:
    """zlib.crc32 behind hashlib's interface; hexdigest is eight lower-case hex digits."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


def normalize_algorithm(name: str) -> str | None:
    """The canonical name of an algorithm (``sha256``, ``Sha-256`` -> ``SHA-256``), or ``None`` if unknown."""
    text = name.strip().upper()
    if text in ALGORITHMS:
        return text
    return _ALIASES.get(text.replace("-", ""))


def new_hash(algorithm: str) -> Hasher:
    """A fresh streaming hash for one of :data:`ALGORITHMS` (``ValueError`` for any other name)."""
    name = normalize_algorithm(algorithm)
    if name is None:
        raise ValueError(f"unknown hash algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    if name == "CRC32":
        return _CRC32()
    return hashlib.new(name.replace("-", "").lower())


def format_hash_feature(selected: str, algorithms: tuple[str, ...] = ALGORITHMS) -> str:
    """FEAT's parameters for HASH: ``SHA-256*;SHA-512;SHA-1;MD5;CRC32`` (``*`` after the selected one)."""
    return ";".join(name + ("*" if name == selected else "") for name in algorithms)


def parse_hash_feature(params: str) -> tuple[tuple[str, ...], str | None]:
    """The algorithms a server's FEAT line offers (canonical names where known, in its order) and the selected
    one: ``"SHA-1*;MD5;"`` -> ``(("SHA-1", "MD5"), "SHA-1")``."""
    names: list[str] = []
    selected = None
    for item in params.split(";"):
        item = item.strip()
        if not item:
            continue
        star = item.endswith("*")
        raw = item.rstrip("*").strip()
        name = normalize_algorithm(raw) or raw.upper()
        names.append(name)
        if star:
            selected = name
    return tuple(names), selected


@dataclass(frozen=True, slots=True)
class HashResult:
    """A HASH reply: the algorithm, the byte range as the server printed it, the digest (lower case), the path."""

    algorithm: str
    start: int | None
    end: int | None
    digest: str
    path: str


def format_hash_reply(algorithm: str, start: int, end: int, digest: str, path: str) -> str:
    """The 213 reply's text: ``SHA-256 0-49 <hex> <path>`` (END inclusive)."""
    return f"{algorithm} {start}-{end} {digest.lower()} {path}"


def parse_hash_reply(reply: Reply) -> HashResult:
    """Read a HASH reply (its last line; ProFTPD sends ``213-Computing ...`` first). :class:`ReplyError` when it is
    not a success or carries no hex digest."""
    if reply.code // 100 != 2:
        raise ReplyError(f"HASH failed: {reply.code} {reply.lines[-1]}")
    words = reply.lines[-1].strip().split(" ")
    if len(words) < 2:
        raise ReplyError(f"HASH reply without a digest: {reply.lines[-1][:80]!r}")
    algorithm = normalize_algorithm(words[0]) or words[0].upper()
    start = end = None
    rest = words[1:]
    match = re.fullmatch(r"(\d+)-(\d+)", rest[0])
    if match:
        start, end = int(match.group(1)), int(match.group(2))
        rest = rest[1:]
    if not rest or not _HEX.fullmatch(rest[0]):
        raise ReplyError(f"HASH reply without a hex digest: {reply.lines[-1][:80]!r}")
    return HashResult(algorithm, start, end, _digest(algorithm, rest[0]), " ".join(rest[1:]))


def parse_x_reply(reply: Reply, algorithm: str) -> str:
    """The digest (lower case) of an XSHA1/XSHA256/XSHA512/XMD5/XCRC reply: the last word of the last line."""
    if reply.code // 100 != 2:
        raise ReplyError(f"{algorithm} digest failed: {reply.code} {reply.lines[-1]}")
    words = reply.lines[-1].strip().split(" ")
    if not words or not _HEX.fullmatch(words[-1]):
        raise ReplyError(f"{algorithm} digest reply without a hex digest: {reply.lines[-1][:80]!r}")
    return _digest(algorithm, words[-1])


def _digest(algorithm: str, text: str) -> str:
    digest = text.lower()
    if algorithm == "CRC32" and len(digest) < 8:
        digest = digest.rjust(8, "0")  # some servers drop leading zeros of a CRC
    want = HEX_LENGTH.get(algorithm)
    if want is not None and len(digest) != want:
        raise ReplyError(f"{algorithm} digest {text[:140]!r} has {len(digest)} hex digits, not {want}")
    return digest


@dataclass(frozen=True, slots=True)
class HashMethod:
    """How a client asks a server for a digest: HASH (with OPTS HASH first when ``select``) or an X command."""

    command: str  # "HASH" or one of X_COMMANDS
    algorithm: str
    select: bool = False  # OPTS HASH <algorithm> before HASH

    def __str__(self) -> str:
        return f"HASH ({self.algorithm})" if self.command == "HASH" else f"{self.command} ({self.algorithm})"


def choose_method(features: Mapping[str, str], algorithm: str | None = None) -> HashMethod | None:
    """The best way to get a digest from a server with these FEAT features (:func:`ftpkit.protocol.features.
    parse_features`): HASH with the best algorithm both sides have, else the best X command it lists, else
    ``None``. With ``algorithm``: that one only (by HASH if offered, else by its X command)."""
    wanted = PREFERENCE if algorithm is None else (normalize_algorithm(algorithm) or algorithm.upper(),)
    if "HASH" in features:
        offered, selected = parse_hash_feature(features["HASH"])
        for name in wanted:
            if name in offered:
                return HashMethod("HASH", name, select=name != selected)
    for command, name in X_COMMANDS.items():
        if command in features and name in wanted:
            return HashMethod(command, name)
    return None
