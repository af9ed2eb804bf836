"""Captures as a stream of records: pcap (micro- and nanosecond, either byte order), pcapng (several sections and
interfaces, each with its own link type and time resolution), files either of them gzip-compressed.

:class:`RecordParser` is incremental: bytes go in as they come (a file read in large chunks, or a capture tool's
pipe, a few packets at a time) and every record that is whole comes out; what is left of a record waits for the
next bytes. Records are cut with ``struct.unpack_from``; memory stays at one chunk plus one record whatever the
capture's size. Damage is reported as :class:`CaptureError` with the byte offset and the number of packets read
before it, after every good record has been yielded. :class:`RecordReader` reads a file through it.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

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


class PcapBlock(NamedTuple):
    """What :meth:`RecordParser.pcap_blocks` hands out: bytes with whole records from ``start`` to ``stop`` (maybe
    the start of one at the end), the layout of a record header (seconds, fraction, captured length, original
    length, in the file's byte order), the link type, seconds per tick of the fraction."""

    buf: bytes | bytearray
    start: int
    stop: int
    record: struct.Struct
    linktype: int
    unit: float


class CaptureError(Exception):
    """Input that cannot be read on: ``str()`` is the one line shown to the user."""

    def __init__(self, path: str, message: str, packets: int = 0) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.packets = packets


class RecordParser:
    """Bytes in, records out. ``feed(data)`` yields every record that ``data`` completes (iterate it to the end
    before feeding more); ``finish()`` says whether the input ended inside a record."""

    def __init__(self, name: str, compressed: bool = False) -> None:
        self.name = name
        self.compressed = compressed
        self.packets = 0
        self.format = "?"
        self.linktypes: set[int] = set()
        self.received = 0  # bytes fed so far
        self._buf = b""  # bytes not yet parsed: the start of a record
        self._base = 0  # stream offset of self._buf[0]
        self._kind = ""  # "", "pcap" or "pcapng" once the header is read
        # pcap
        self._linktype = 0
        self._unit = 1e-6
        self._rec = struct.Struct("<IIII")
        # pcapng
        self._order = "<"
        self._ifaces: list[tuple[int, float, int]] = []  # (link type, seconds per tick, offset in seconds)
        self._layouts = {o: (struct.Struct(o + "II"), struct.Struct(o + "IIII")) for o in "<>"}

    # --- errors --------------------------------------------------------------------------------------------------
    def error(self, what: str, where: int | None = None) -> CaptureError:
        at = self._base if where is None else where
        of = " of the uncompressed data" if self.compressed else ""
        return CaptureError(self.name, f"{what} at byte {at}{of}; {self.packets} packets read before it",
                            self.packets)

    def stream_error(self, what: str) -> CaptureError:
        """The input itself broke (a damaged gzip stream): where it stopped, after the records before it."""
        return CaptureError(self.name, f"{what} at byte {self.received} of the uncompressed data; {self.packets} "
                            "packets read before it", self.packets)

    def finish(self) -> None:
        """The input ended: raise if it ended inside the header or a record."""
        left = len(self._buf)
        if self._kind == "":
            if self.received == 0:
                raise CaptureError(self.name, "empty file")
            if left < 4:
                raise self.error("file too short for a capture header")
            raise self.error("truncated file header")
        if not left:
            return
        if self._kind == "pcap":
            raise self.error("truncated record header" if left < 16 else "truncated record")
        raise self.error("truncated block header" if left < 12 else "truncated block")

    # --- parsing -------------------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> Iterator[Record]:
        """The records ``data`` completes (the header is read at once; records as the result is iterated)."""
        self._add(data)
        if not self._kind:
            return iter(())
        return self._pcap() if self._kind == "pcap" else self._pcapng()

    def pcap_blocks(self, data: bytes | bytearray, size: int | None = None) -> list[PcapBlock] | None:
        """The first ``size`` bytes of ``data`` added (all of it without ``size``: ``data`` may be a reused buffer
        longer than what was read into it); for a pcap stream, where to cut the records, for a caller that cuts
        them itself and then says with :meth:`consumed` how far it got in each block, in order. A record begun in
        the bytes before is completed on its own (the first block, small); the new bytes are then cut where they
        lie (the second), without a copy. ``None`` for anything else (pcapng, a header not yet complete): then
        :meth:`feed` with ``b""`` gives the records of what was added."""
        stop = len(data) if size is None else size
        left = self._buf
        if self._kind != "pcap" or not left:
            if self._kind != "pcap":
                self._add(data if stop == len(data) and isinstance(data, bytes) else bytes(data[:stop]))
                if self._kind != "pcap":
                    return None
                return [self._block(self._buf, 0, len(self._buf))]
            self.received += stop
            return [self._block(data, 0, stop)]
        self.received += stop
        caplen = -1
        if len(left) >= 16:
            caplen = self._rec.unpack_from(left)[2]
        elif len(left) + stop >= 16:
            caplen = self._rec.unpack_from(left + data[:16 - len(left)])[2]
        need = 16 + caplen - len(left)
        if caplen < 0 or caplen > MAX_RECORD or need > stop:  # the record goes on beyond these bytes, or damage
            self._buf = left + data[:stop]
            return [self._block(self._buf, 0, len(self._buf))]
        first = left + data[:need]
        return [self._block(first, 0, len(first)), self._block(data, need, stop)]

    def _block(self, buf: bytes | bytearray, start: int, stop: int) -> PcapBlock:
        return PcapBlock(buf, start, stop, self._rec, self._linktype, self._unit)

    def consumed(self, block: PcapBlock, pos: int, packets: int) -> None:
        """The caller of :meth:`pcap_blocks` took the ``packets`` records of ``block`` before offset ``pos``; the
        rest of it (the start of a record) waits for the next bytes."""
        self._buf = bytes(block.buf[pos:block.stop])
        self._base += pos - block.start
        self.packets += packets

    def block_records(self, blocks: list[PcapBlock]) -> Iterator[Record]:
        """The records of what :meth:`pcap_blocks` handed out, each frame a copy of its own (the blocks' buffer
        may be filled again once this ended); then what :meth:`feed` says of the rest (damage)."""
        packets = 0
        for block in blocks:
            buf, pos, stop = block.buf, block.start, block.stop
            unpack_from, linktype, unit = block.record.unpack_from, block.linktype, block.unit
            view = memoryview(buf)
            try:
                while pos + 16 <= stop:
                    sec, frac, caplen, _ = unpack_from(buf, pos)
                    end = pos + 16 + caplen
                    if end > stop or caplen > MAX_RECORD:
                        break
                    packets += 1
                    frame = bytes(view[pos + 16:end])
                    pos = end
                    yield sec + frac * unit, linktype, frame
            finally:
                view.release()
                self.consumed(block, pos, packets)
                packets = 0
        yield from self.feed(b"")

    def _add(self, data: bytes) -> None:
        self.received += len(data)
        buf = self._buf + data if self._buf else data
        self._buf = buf
        if not self._kind:
            if len(buf) < 4:
                return
            magic = buf[:4]
            if magic in PCAP_MAGICS:
                if len(buf) < 24:
                    return
                order, self._unit = PCAP_MAGICS[magic]
                self._linktype = struct.unpack_from(order + "I", buf, 20)[0] & 0x0FFFFFFF
                self.linktypes.add(self._linktype)
                self._rec = struct.Struct(order + "IIII")
                self._kind = self.format = "pcap"
                self._buf, self._base = buf[24:], self._base + 24
            elif magic == PCAPNG_SHB:
                self._kind = self.format = "pcapng"
            else:
                raise CaptureError(self.name, f"not a pcap or pcapng file (it starts with {magic.hex(' ')})")

    def _pcap(self) -> Iterator[Record]:
        buf, pos, end_of_buf = self._buf, 0, len(self._buf)
        unpack_from, linktype, unit = self._rec.unpack_from, self._linktype, self._unit
        try:
            while pos + 16 <= end_of_buf:
                sec, frac, caplen, _ = unpack_from(buf, pos)
                if caplen > MAX_RECORD:
                    raise self.error(f"corrupt record (length {caplen})", self._base + pos)
                end = pos + 16 + caplen
                if end > end_of_buf:
                    break
                self.packets += 1
                yield sec + frac * unit, linktype, buf[pos + 16:end]
                pos = end
        finally:
            self._buf, self._base = buf[pos:], self._base + pos

    def _pcapng(self) -> Iterator[Record]:
        buf, pos, end_of_buf = self._buf, 0, len(self._buf)
        head, epb = self._layouts[self._order]
        try:
            while pos + 12 <= end_of_buf:
                kind, length = head.unpack_from(buf, pos)
                if kind == 0x0A0D0D0A:  # a section header: its byte-order magic decides the order from here on
                    bom = buf[pos + 8:pos + 12]
                    if bom == b"\x4d\x3c\x2b\x1a":
                        self._order = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        self._order = ">"
                    else:
                        raise self.error("bad byte-order magic in a section header", self._base + pos)
                    head, epb = self._layouts[self._order]
                    kind, length = head.unpack_from(buf, pos)
                    self._ifaces = []
                if length < 12 or length % 4 or length > MAX_RECORD:
                    raise self.error(f"corrupt block (length {length})", self._base + pos)
                if pos + length > end_of_buf:
                    break
                block_at, pos = pos, pos + length
                if kind == 6 or kind == 2:  # enhanced packet block; obsolete packet block
                    if kind == 6:
                        iface, high, low, caplen = epb.unpack_from(buf, block_at + 8)
                    else:
                        iface, _, high, low, caplen = struct.unpack_from(self._order + "HHIII", buf, block_at + 8)
                    if iface >= len(self._ifaces) or 28 + caplen > length:
                        raise self.error(f"bad packet block (interface {iface}, length {caplen})",
                                         self._base + block_at)
                    linktype, tick, offset = self._ifaces[iface]
                    self.packets += 1
                    yield offset + ((high << 32) | low) * tick, linktype, buf[block_at + 28:block_at + 28 + caplen]
                elif kind == 3:  # simple packet block: interface 0, no time stamp
                    if not self._ifaces:
                        raise self.error("packet block before any interface description", self._base + block_at)
                    caplen = min(struct.unpack_from(self._order + "I", buf, block_at + 8)[0], length - 16)
                    self.packets += 1
                    yield 0.0, self._ifaces[0][0], buf[block_at + 12:block_at + 12 + caplen]
                elif kind == 1:
                    iface_info = _interface(buf[block_at:block_at + length], self._order)
                    self._ifaces.append(iface_info)
                    self.linktypes.add(iface_info[0])
        finally:
            self._buf, self._base = buf[pos:], self._base + pos


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


class RecordReader:
    """Iterate over the records of one file (plain or gzip). ``packets``, ``format`` and ``linktypes`` say what was
    read; ``chunk`` is how much is read at a time."""

    def __init__(self, path: str | Path, chunk: int = CHUNK) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.chunk = chunk
        self.compressed = False
        self.parser = RecordParser(self.name)

    @property
    def packets(self) -> int:
        return self.parser.packets

    @property
    def format(self) -> str:
        return self.parser.format

    @property
    def linktypes(self) -> set[int]:
        return self.parser.linktypes

    def __iter__(self) -> Iterator[Record]:
        try:
            raw = self.path.open("rb")
        except OSError as exc:
            raise CaptureError(self.name, exc.strerror or str(exc)) from None
        with raw:
            if raw.read(2) == GZIP_MAGIC:
                raw.seek(0)
                stream: gzip.GzipFile | None = gzip.GzipFile(fileobj=raw, mode="rb")
                self.compressed = self.parser.compressed = True
            else:
                raw.seek(0)
                stream = None
            readinto = stream.readinto if stream is not None else raw.readinto
            parser = self.parser
            buf = bytearray(self.chunk)  # read into again and again: a fresh chunk per read costs more than its records
            while True:
                try:
                    size = readinto(buf)
                except EOFError:
                    raise parser.stream_error("truncated gzip stream") from None
                except (gzip.BadGzipFile, zlib.error, OSError) as exc:
                    raise parser.stream_error(f"damaged gzip stream ({exc})") from None
                if not size:
                    break
                blocks = parser.pcap_blocks(buf, size)
                yield from parser.feed(b"") if blocks is None else parser.block_records(blocks)
            parser.finish()

    def first_timestamp(self) -> float | None:
        """The time stamp of the first record (reading as little as it can), or ``None`` for a file without one;
        raises :class:`CaptureError` for a file that cannot be read."""
        for ts, _, _ in self:
            return ts
        return None
