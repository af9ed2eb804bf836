"""Several capture files read in time order as one stream, so that a session split across files is one session.

Files are sorted by their first packet and read together, packet by packet in time-stamp order, each only while its
time range is being read (a rotated set of hundreds of files has one or two open at a time). Which files are the
same capture point is decided by time: a file that starts after another one has ended continues it (``tcpdump -C``
and ``-G`` sets: ``cap.pcap``, ``cap.pcap1``, ...; strftime names) and shares its flows and sessions; files whose
time ranges overlap were captured at the same time in different places (the two sides of a NAT) and are separate
capture points, each with its own flows. When two ended files could be continued, the one whose name has the longer
common prefix with the new file's is.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ftpkit.capture.analyzer import PointAnalysis
from ftpkit.capture.engine import Analyzer
from ftpkit.capture.model import FileInfo
from ftpkit.capture.packets import SUPPORTED_LINKTYPES
from ftpkit.capture.records import CaptureError, Record, RecordReader

PEEK = 64 * 1024  # bytes read to learn a file's first time stamp


@dataclass
class Chain:
    """The files of one capture point, one after the other."""

    point: PointAnalysis
    last_path: str
    last_ts: float
    reading: Source | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class Source:
    path: str
    order: int  # position on the command line
    first: float | None = None
    reader: RecordReader | None = None
    records: Iterator[Record] | None = None
    point: PointAnalysis | None = None
    chain: Chain | None = None
    error: str | None = None


def _peek(path: str) -> tuple[float | None, str | None]:
    try:
        return RecordReader(path, chunk=PEEK).first_timestamp(), None
    except CaptureError as exc:
        return None, str(exc)


def _common_prefix(a: str, b: str) -> int:
    """Characters in common at the start (``cap.pcap`` and ``cap.pcap1``: 8), not path components."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Timeline:
    def __init__(self, paths: Sequence[str | Path], analyzer: Analyzer) -> None:
        self.analyzer = analyzer
        self.sources = [Source(str(p), i) for i, p in enumerate(paths)]
        self.chains: list[Chain] = []

    def run(self) -> list[FileInfo]:
        """Feed every file's packets to the analyzer in time order; what was read of each file."""
        pending: list[Source] = []
        for src in self.sources:
            src.first, src.error = _peek(src.path)
            if src.error is None and src.first is not None:
                pending.append(src)
        pending.sort(key=lambda s: (s.first, s.order))
        heap: list[tuple[float, int, Source, Record]] = []
        while pending or heap:
            start = pending[0].first if pending else math.inf
            assert start is not None
            if not heap or heap[0][0] > start:
                src = pending.pop(0)
                self._open(src)
                assert src.records is not None
                self._read(src, src.records, -math.inf, heap)
            elif len(heap) == 1:  # the common case, one file at a time: its records straight to the analyzer
                _, _, src, record = heap.pop()
                assert src.records is not None
                self._read(src, itertools.chain((record,), src.records), start, heap)
            else:
                _, _, src, record = heapq.heappop(heap)
                assert src.records is not None
                self._read(src, itertools.chain((record,), src.records), heap[0][0], heap)
        return [self._info(src) for src in self.sources]

    def _open(self, src: Source) -> None:
        ended = [c for c in self.chains if c.reading is None]
        if ended:
            chain = max(ended, key=lambda c: (_common_prefix(c.last_path, src.path), c.last_ts))
        else:
            name = src.path
            while name in self.analyzer.points:  # the same file twice: two points
                name += "'"
            chain = Chain(self.analyzer.point(name), src.path, -math.inf)
            self.chains.append(chain)
        chain.reading, chain.last_path = src, src.path
        chain.files.append(src.path)
        src.point, src.chain = chain.point, chain
        src.reader = RecordReader(src.path)
        src.records = iter(src.reader)

    def _read(self, src: Source, records: Iterator[Record], until: float,
              heap: list[tuple[float, int, Source, Record]]) -> None:
        """``src``'s records up to the first one later than ``until``, which waits in the heap."""
        assert src.point is not None
        src.point.file = src.path
        try:
            rest = src.point.run(records, until)
        except CaptureError as exc:
            src.error = str(exc)
            rest = None
        if rest is not None:
            heapq.heappush(heap, (rest[0], src.order, src, rest))
            return
        chain = src.chain
        assert chain is not None
        chain.reading = None
        chain.last_ts = self.analyzer.now

    def _info(self, src: Source) -> FileInfo:
        reader = src.reader
        if reader is None:  # never opened: unreadable, or no packet in it
            peek = RecordReader(src.path, chunk=PEEK)
            fmt, compressed = "?", False
            if src.error is None:
                try:
                    for _ in peek:
                        pass
                except CaptureError as exc:
                    src.error = str(exc)
                fmt, compressed = peek.format, peek.compressed
            return FileInfo(src.path, fmt, compressed, 0, src.error)
        error = src.error
        if error is None and reader.packets and not reader.linktypes & SUPPORTED_LINKTYPES:
            kinds = ", ".join(str(k) for k in sorted(reader.linktypes))
            error = f"{src.path}: no TCP/IP packets; link type {kinds} is not supported"
        return FileInfo(src.path, reader.format, reader.compressed, reader.packets, error)
