"""The packet loop of one capture point (a file, a rotated set of files, an interface): TCP segments into flows;
control connections into sessions; data connections matched to the announcements their sessions made, and their
fate decided as soon as the packets tell it.

A control connection is recognised by its port (21 and ``--ftp-port``) or by its first bytes (a server greeting
``220``, a client sending ``USER``). A data connection is the first connection, after a PORT/EPRT command or a
227/229 reply and before the transfer's final reply, to the announced port on the announced address or the
address the capture shows for that side (clients that ignore a private 227 address connect there).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftpkit.capture.events import DecidedBy, EndReason
from ftpkit.capture.flows import OTHER, Flow, FlowTable
from ftpkit.capture.model import Endpoint, Fate, Session
from ftpkit.capture.packets import (
    ACK,
    ETHERNET,
    FAST_HEADERS,
    FIN,
    RST,
    SUPPORTED_LINKTYPES,
    SYN,
    Segment,
    address,
    segment,
    tcp_header,
)
from ftpkit.capture.records import MAX_RECORD, PcapBlock, Record, RecordParser
from ftpkit.capture.sessions import FTP_VERBS, Expectation, SessionBuilder

if TYPE_CHECKING:
    from ftpkit.capture.engine import Analyzer

__all__ = ["FTP_VERBS", "MAIL_PORTS", "Options", "PointAnalysis"]

MAIL_PORTS = frozenset({25, 465, 587, 2525})
"""Ports whose 220 greeting is SMTP's: never taken for FTP by content (``--ftp-port`` still can)."""


@dataclass(frozen=True)
class Options:
    ftp_ports: frozenset[int] = frozenset({21, 990})  # 990: implicit FTPS, reported as encrypted
    show_passwords: bool = False
    lang: str | None = None
    slow_reply: float = 5.0  # seconds
    max_flows: int = 100_000
    max_log: int = 10_000  # log lines kept per session
    syn_timeout: float = 5.0  # seconds after which an unanswered SYN is reported (Linux retransmits at 1 and 3 s)
    idle_end: float = 3600.0  # seconds without a packet after which an open session is ended
    unanswered_end: float = 135.0  # the same for a control connection that never got an answer (Linux: 127 s)


class PointAnalysis:
    """One capture point: its own flows (the same connection seen at another point is another flow) and
    sessions. ``file`` is what sessions found from now on are named after."""

    def __init__(self, name: str, engine: Analyzer) -> None:
        self.name = name
        self.file = name
        self.engine = engine
        self.options = engine.options
        self.table = FlowTable(self.options.max_flows)
        self.expectations: dict[int, list[Expectation]] = {}
        self.builders: dict[int, SessionBuilder] = {}  # open sessions by id
        self.waiting: list[tuple[float, int, Flow, Expectation | SessionBuilder]] = []  # SYNs to decide, a heap
        self.segments = 0
        self.unsupported: dict[int, int] = {}

    # --- the data hub the session builders talk to ----------------------------------------------------------------
    def expect(self, exp: Expectation) -> None:
        self.expectations.setdefault(exp.port, []).append(exp)

    def close(self, exp: Expectation) -> None:
        waiting = self.expectations.get(exp.port)
        if waiting and exp in waiting:
            waiting.remove(exp)
            if not waiting:
                del self.expectations[exp.port]

    def transfer_done(self, exp: Expectation, ts: float) -> None:
        """The transfer's final reply came: an attempt still without an answer will not get one that matters."""
        for flow in exp.flows:
            self._unanswered(flow, exp, ts, "reply")

    def confirmed(self, builder: SessionBuilder) -> None:
        self.engine.session_started(builder)

    def rejected(self, builder: SessionBuilder) -> None:
        builder.done = True
        builder.flow.owner = OTHER
        for exp in builder.expectations:
            self.close(exp)
        self.builders.pop(id(builder), None)

    def ended(self, builder: SessionBuilder, ts: float, reason: EndReason) -> None:
        """The control connection ended: the session's facts and findings are final."""
        if id(builder) not in self.builders:
            return
        del self.builders[id(builder)]
        builder.flow.owner = OTHER  # its last ACKs are only counted
        if reason == "idle":
            self.table.remove(builder.flow)  # if it speaks again, it is a session seen from the middle
        for exp in builder.expectations:
            for flow in exp.flows:
                self._unanswered(flow, exp, ts, "session-end")
        builder.finish()
        self.engine.session_ended(builder, ts, reason)

    # --- the loop -------------------------------------------------------------------------------------------------
    def run(self, records: Iterable[Record], until: float = math.inf) -> Record | None:
        """Analyse ``records`` in order up to the first one later than ``until``, which is returned unread (None
        when they ran out). A file read alone passes its whole iterator; a live capture each chunk's records."""
        table, engine = self.table, self.engine
        by_key = table.by_key
        segments = 0
        try:
            for record in records:
                ts, linktype, frame = record
                if ts > until:
                    return record
                h = tcp_header(linktype, frame)
                if h is None:
                    if linktype not in SUPPORTED_LINKTYPES:
                        self.unsupported[linktype] = self.unsupported.get(linktype, 0) + 1
                    continue
                segments += 1
                if ts >= engine.next_tick:
                    engine.advance(ts)
                    by_key = table.by_key
                key, seq, _, flags, start, end = h
                entry = by_key.get(key)
                if entry is not None and flags & (SYN | ACK) == SYN and entry[0].finished:
                    entry = None  # the same addresses and ports again, after the old connection ended: a new one
                if entry is None:
                    seg = segment(frame, h)
                    flow, d = self._new_flow(ts, seg, key), 0
                    by_key = table.by_key  # the table may have been swept
                else:
                    flow, d = entry
                    flow.packet(d, ts, seq, flags, end - start)
                    owner = flow.owner
                    if owner is OTHER:
                        continue  # the fast path: other traffic, or a data connection counted already
                    if owner.__class__ is Expectation:
                        if not flow.settled:
                            self._data(flow, owner, ts)
                        continue
                    seg = segment(frame, h)
                owner = flow.owner
                if owner is None:
                    if not seg.payload:
                        continue
                    owner = self._probe(flow, d, seg)
                if owner.__class__ is SessionBuilder:
                    owner.packet(d, ts, seg)
        finally:
            self.segments += segments
        return None

    def feed(self, parser: RecordParser, data: bytes | bytearray, size: int | None = None) -> None:
        """Analyse what the first ``size`` bytes of ``data`` (all without ``size``) complete of the capture
        ``parser`` reads: a live capture's pipe, a buffer at a time. The same analysis as :meth:`run` of the
        parser's records, but a packet of a connection that is only counted (other traffic, a data connection
        whose fate is settled: nearly all packets of a transfer) is counted where it lies in the pcap bytes, with
        one unpack and no object made for it; only the others become records for :meth:`run`, in their place in
        the order. ``data`` is not kept: a reused buffer can be filled again once this returns."""
        blocks = parser.pcap_blocks(data, size)
        if blocks is None:
            self.run(parser.feed(b""))
        else:
            self.run(self._counted(parser, blocks))

    def _counted(self, parser: RecordParser, blocks: list[PcapBlock]) -> Iterator[Record]:
        """The records of ``blocks`` that need more than counting; the others counted on the way."""
        linktype, unit = blocks[0].linktype, blocks[0].unit
        record = blocks[0].record.unpack_from
        fast = FAST_HEADERS.get(linktype)
        if fast is None:  # no fast path for this link type: no frame is long enough for it
            fast = (*FAST_HEADERS[ETHERNET][:3], MAX_RECORD + 1, MAX_RECORD + 1)
        header, header6, at, least, least6 = fast
        at += 16  # from the start of the record header
        table, engine = self.table, self.engine
        by_key, next_tick = table.by_key, engine.next_tick
        packets = counted = 0
        for block in blocks:
            buf, pos, stop = block.buf, block.start, block.stop
            view = memoryview(buf)
            try:
                while pos + 16 <= stop:
                    sec, frac, caplen, _ = record(buf, pos)
                    end = pos + 16 + caplen
                    if end > stop or caplen > MAX_RECORD:
                        break  # the rest comes with the next bytes, or the parser names the damage
                    ts = sec + frac * unit
                    if caplen >= least and ts < next_tick:
                        key = None
                        proto, vi, total, frag, ip, k, seq, _, off, flags = header(buf, pos + at)
                        if proto == 0x0800:
                            if vi == 0x45 and ip == 6 and not frag & 0x1FFF and not flags & (SYN | FIN | RST) and total:
                                key, size = k, total - 20 - (off >> 4) * 4
                        elif proto == 0x86DD and caplen >= least6:
                            _, vi, total, ip, k, seq, _, off, flags = header6(buf, pos + at)
                            if vi >> 4 == 6 and ip == 6 and not flags & (SYN | FIN | RST) and total:
                                key, size = k, total - (off >> 4) * 4
                        entry = None if key is None else by_key.get(key)
                        if entry is not None:
                            flow, d = entry
                            owner = flow.owner
                            if owner is OTHER or (flow.settled and owner.__class__ is Expectation):
                                flow.packet(d, ts, seq, flags, size if size > 0 else 0)
                                counted += 1
                                pos = end
                                continue
                    packets += 1
                    frame = bytes(view[pos + 16:end])
                    pos = end
                    yield ts, linktype, frame
                    by_key, next_tick = table.by_key, engine.next_tick  # swept, or the clock moved
            finally:
                view.release()
                self.segments += counted
                parser.consumed(block, pos, packets + counted)
                packets = counted = 0
        yield from parser.feed(b"")  # damage: the parser says where

    def _new_flow(self, ts: float, seg: Segment, key: bytes) -> Flow:
        flow = Flow(Endpoint(address(seg.src), seg.sport), Endpoint(address(seg.dst), seg.dport), ts)
        self.table.add(key, flow)
        flow.packet(0, ts, seg.seq, seg.flags, seg.size)
        # A SYN goes to the responder, a SYN-ACK comes from it; mid-connection either side may have been called.
        responders = ([0] if seg.flags & ACK else [1]) if seg.flags & SYN else [1, 0]
        if seg.flags & SYN or seg.payload:  # a lone ACK, FIN or RST starts no session
            ports = self.options.ftp_ports
            for r in responders:
                if flow.ep[r].port in ports:
                    self._start_session(flow, server_dir=r, by_port=True)
                    return flow
        for r in responders:
            if self._match(flow, r):
                return flow
        return flow

    def _match(self, flow: Flow, r: int) -> bool:
        responder, initiator = flow.ep[r], flow.ep[1 - r]
        waiting = self.expectations.get(responder.port)
        if not waiting:
            return False
        best = None
        for exp in reversed(waiting):  # the latest announcement first
            if responder.ip in exp.responder_ips:
                if initiator.ip == exp.initiator_ip:
                    best = exp
                    break
                best = best or exp
        if best is None:
            return False
        best.flows.append(flow)
        flow.owner = best
        if flow.initiator is None:
            flow.initiator = 1 - r
        self._data(flow, best, flow.first_ts)
        return True

    def _probe(self, flow: Flow, d: int, seg: Segment) -> object:
        ports = self.options.ftp_ports
        for r in (1, 0):  # mid-connection on a control port: the first payload starts the session
            if flow.ep[r].port in ports:
                return self._start_session(flow, server_dir=r, by_port=True)
        bit = 1 << d
        if flow.probed & bit:
            return OTHER if flow.probed == 3 else None
        flow.probed |= bit
        if flow.ep[0].port in MAIL_PORTS or flow.ep[1].port in MAIL_PORTS:
            flow.owner = OTHER
            return OTHER
        head = seg.payload[:5]
        if head[:3] == b"220" and head[3:4] in (b" ", b"-", b"\r", b"\n"):
            return self._start_session(flow, server_dir=d, by_port=False)
        if head.upper() == b"USER ":
            return self._start_session(flow, server_dir=1 - d, by_port=False)
        if flow.probed == 3:
            flow.owner = OTHER
            return OTHER
        return None

    def _start_session(self, flow: Flow, server_dir: int, by_port: bool) -> SessionBuilder:
        client, server = flow.ep[1 - server_dir], flow.ep[server_dir]
        session = Session(0, self.file, client, server, flow.first_ts, flow.last_ts)
        builder = SessionBuilder(session, flow, 1 - server_dir, self, self.options.show_passwords,
                                 self.options.max_log, by_port=by_port, seq=self.engine.next_seq())
        flow.owner = builder
        self.builders[id(builder)] = builder
        if by_port:
            self.engine.session_started(builder)
            if flow.syns and not flow.synack and flow.initiator == 1 - server_dir:
                self._wait(flow, builder)
        return builder

    # --- deciding the fate of connections -------------------------------------------------------------------------
    def _wait(self, flow: Flow, owner: Expectation | SessionBuilder) -> None:
        deadline = (flow.syn_ts if flow.syn_ts is not None else flow.first_ts) + self.options.syn_timeout
        heapq.heappush(self.waiting, (deadline, self.engine.next_seq(), flow, owner))
        self.engine.wake_at(deadline)

    def _data(self, flow: Flow, exp: Expectation, ts: float) -> None:
        """A packet of a data connection whose fate is not settled: settle it if it tells."""
        fate: Fate
        if flow.synack or flow.hi[0] or flow.hi[1]:
            fate = "established"
        elif flow.rst_dir is not None and flow.rst_dir != flow.client_dir():
            fate = "refused"
        else:
            if flow.syns and flow.verdict is None:
                flow.verdict = "waiting"  # decided by the transfer's reply, the session's end or the time-out
                self._wait(flow, exp)
            return
        flow.settled = True
        if flow.verdict != fate:
            flow.verdict = fate
            self.engine.connection_decided(exp.session, exp.transfer, flow, fate, ts, "answer")

    def _unanswered(self, flow: Flow, exp: Expectation, ts: float, by: DecidedBy) -> None:
        if flow.settled or flow.verdict == "syn-unanswered" or not flow.syns:
            return
        if flow.synack or flow.hi[0] or flow.hi[1] or flow.rst_dir is not None:
            self._data(flow, exp, ts)
            return
        flow.verdict = "syn-unanswered"
        self.engine.connection_decided(exp.session, exp.transfer, flow, "syn-unanswered", ts, by)

    def expire(self, now: float) -> float | None:
        """Decide the SYNs whose time is up; the next deadline, if any."""
        waiting = self.waiting
        while waiting and waiting[0][0] <= now:
            deadline, _, flow, owner = heapq.heappop(waiting)
            if isinstance(owner, Expectation):
                self._unanswered(flow, owner, deadline, "timeout")
            elif not owner.done and not (flow.synack or flow.hi[0] or flow.hi[1] or flow.rst_dir is not None):
                flow.verdict = "syn-unanswered"
                self.engine.connection_decided(owner.session, None, flow, "syn-unanswered", deadline, "timeout")
        return waiting[0][0] if waiting else None

    def idle(self, now: float) -> None:
        """End the sessions that have been quiet too long."""
        opts = self.options
        for builder in list(self.builders.values()):
            flow = builder.flow
            answered = flow.synack or flow.hi[0] or flow.hi[1] or flow.rst_dir is not None
            limit = opts.idle_end if answered else opts.unanswered_end
            if now - builder.last_activity() > limit:
                self.ended(builder, builder.session.end, "idle")

    def finish(self) -> list[SessionBuilder]:
        """The open sessions, oldest first (the capture ended)."""
        return sorted(self.builders.values(), key=lambda b: b.seq)
