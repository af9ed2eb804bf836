"""Capture files as a stream of records: pcap (micro- and nanosecond, either byte order), pcapng (several sections
and interfaces, each with its own link type and time resolution), either of them gzip-compressed.

Records are read in large chunks and cut with ``struct.unpack_from``; memory stays at one chunk plus one record
whatever the file's size. Damage is reported as :class:`CaptureError` with the byte offset and the number of
packets read before it, after every good record has been yielded.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
MAX_RECORD = 1 << 26  # a record longer than 64 MiB is damage, not a packet

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

Record = tuple[float, int, bytes]
"""(timestamp in seconds, link type, frame bytes)."""


class CaptureError(Exception):
    """Input that cannot be read on: ``str()`` is the one line shown to the user."""

    def __init__(self, path: str, message: str, packets: int = 0) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.packets = packets


Stream = io.BufferedReader | gzip.GzipFile
"""A capture file as read: both kinds offer ``read1`` (one read of the underlying file at most)."""


def _open(path: Path) -> tuple[Stream, bool]:
    raw = path.open("rb")
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), True
    raw.seek(0)
    return raw, False


class RecordReader:
    """Iterate over the records of one file. ``packets`` and ``offset`` say how far it got."""

    _stream: Stream  # set when iteration starts

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.packets = 0
        self.offset = 0
        self.compressed = False
        self.format = "?"
        self._damage_gzip: str | None = None
        self._buf = b""  # buffered input; self._pos is the next byte in it, self._base its offset in the stream
        self._pos = 0
        self._base = 0
        self._eof = False

    # --- the buffer ----------------------------------------------------------------------------------------------
    def _fill(self, need: int) -> bool:
        """Make sure ``need`` bytes are buffered at ``self._pos``; False at the end of the input."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos:]]
        while have < need:
            try:
                data = self._stream.read1(max(CHUNK, need - have))
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
                self._eof = True
                self._buf, self._base, self._pos = b"".join(parts), self._base + self._pos, 0
                truncated = isinstance(exc, EOFError)
                self._damage_gzip = "truncated gzip stream" if truncated else f"damaged gzip stream ({exc})"
                return False
            if not data:
                self._eof = True
                break
            parts.append(data)
            have += len(data)
        self._base += self._pos
        self._buf, self._pos = b"".join(parts), 0
        return have >= need

    def _fail(self, what: str) -> CaptureError:
        where = self._base + self._pos
        gz = self._damage_gzip
        if gz:
            where = self._base + len(self._buf)
            return CaptureError(self.name, f"{gz} at byte {where} of the uncompressed data; {self.packets} packets "
                                "read before it", self.packets)
        of = " of the uncompressed data" if self.compressed else ""
        return CaptureError(self.name, f"{what} at byte {where}{of}; {self.packets} packets read before it",
                            self.packets)

    # --- iteration -----------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Record]:
        try:
            stream, self.compressed = _open(self.path)
        except OSError as exc:
            raise CaptureError(self.name, exc.strerror or str(exc)) from None
        with stream:
            self._stream, self._buf, self._pos, self._base, self._eof = stream, b"", 0, 0, False
            if not self._fill(4):
                if self._buf or self._damage_gzip:
                    raise self._fail("file too short for a capture header")
                raise CaptureError(self.name, "empty file")
            magic = self._buf[:4]
            if magic in PCAP_MAGICS:
                self.format = "pcap"
                yield from self._pcap(*PCAP_MAGICS[magic])
            elif magic == PCAPNG_SHB:
                self.format = "pcapng"
                yield from self._pcapng()
            else:
                raise CaptureError(self.name, f"not a pcap or pcapng file (it starts with {magic.hex(' ')})")

    def _pcap(self, order: str, unit: float) -> Iterator[Record]:
        if not self._fill(24):
            raise self._fail("truncated file header")
        linktype = struct.unpack_from(order + "I", self._buf, 20)[0] & 0x0FFFFFFF
        self._pos += 24
        rec = struct.Struct(order + "IIII")
        unpack_from = rec.unpack_from
        while True:
            buf, pos = self._buf, self._pos
            if pos + 16 > len(buf) and not self._fill(16):
                if len(self._buf) - self._pos:
                    raise self._fail("truncated record header")
                return
            buf, pos = self._buf, self._pos
            sec, frac, caplen, _ = unpack_from(buf, pos)
            if caplen > MAX_RECORD:
                raise self._fail(f"corrupt record (length {caplen})")
            end = pos + 16 + caplen
            if end > len(buf):
                if not self._fill(16 + caplen):
                    raise self._fail("truncated record")
                buf, pos = self._buf, self._pos
                end = pos + 16 + caplen
            self._pos = end
            self.packets += 1
            yield sec + frac * unit, linktype, buf[pos + 16:end]

    def _pcapng(self) -> Iterator[Record]:
        order = "<"
        ifaces: list[tuple[int, float, int]] = []  # (link type, seconds per tick, offset in seconds)
        layouts = {o: (struct.Struct(o + "II"), struct.Struct(o + "IIII")) for o in "<>"}
        head, epb = layouts[order]
        while True:
            buf, pos = self._buf, self._pos
            if pos + 12 > len(buf):
                if not self._fill(12):
                    if len(self._buf) - self._pos:
                        raise self._fail("truncated block header")
                    return
                buf, pos = self._buf, self._pos
            kind, length = head.unpack_from(buf, pos)
            if kind == 0x0A0D0D0A:  # a section header: its byte-order magic decides the order from here on
                bom = buf[pos + 8:pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    order = ">"
                else:
                    raise self._fail("bad byte-order magic in a section header")
                head, epb = layouts[order]
                kind, length = head.unpack_from(buf, pos)
                ifaces = []
            if length < 12 or length % 4 or length > MAX_RECORD:
                raise self._fail(f"corrupt block (length {length})")
            if pos + length > len(buf):
                if not self._fill(length):
                    raise self._fail("truncated block")
                buf, pos = self._buf, self._pos
            self._pos = pos + length
            if kind == 6 or kind == 2:  # enhanced packet block; obsolete packet block
                if kind == 6:
                    iface, high, low, caplen = epb.unpack_from(buf, pos + 8)
                else:
                    iface, _, high, low, caplen = struct.unpack_from(order + "HHIII", buf, pos + 8)
                if iface >= len(ifaces) or 28 + caplen > length:
                    raise self._fail(f"bad packet block (interface {iface}, length {caplen})")
                linktype, tick, offset = ifaces[iface]
                self.packets += 1
                yield offset + ((high << 32) | low) * tick, linktype, buf[pos + 28:pos + 28 + caplen]
            elif kind == 3:  # simple packet block: interface 0, no time stamp
                if not ifaces:
                    raise self._fail("packet block before any interface description")
                caplen = min(struct.unpack_from(order + "I", buf, pos + 8)[0], length - 16)
                self.packets += 1
                yield 0.0, ifaces[0][0], buf[pos + 12:pos + 12 + caplen]
            elif kind == 1:
                ifaces.append(_interface(buf[pos:pos + length], order))


def _interface(block: bytes, order: str) -> tuple[int, float, int]:
    """Link type, seconds per time-stamp tick and time-stamp offset of an interface description block."""
    linktype = struct.unpack_from(order + "H", block, 8)[0]
    tick, offset = 1e-6, 0
    pos, end = 16, len(block) - 4
    while pos + 4 <= end:
        code, size = struct.unpack_from(order + "HH", block, pos)
        value = block[pos + 4:pos + 4 + size]
        if code == 0:
            break
        if code == 9 and size >= 1:  # if_tsresol
            tick = 2.0 ** -(value[0] & 0x7F) if value[0] & 0x80 else 10.0 ** -value[0]
        elif code == 14 and size == 8:  # if_tsoffset
            offset = struct.unpack(order + "q", value)[0]
        pos += 4 + size + (-size % 4)
    return linktype, tick, offset
