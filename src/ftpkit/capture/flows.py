"""TCP connections reduced to counters, in a table of bounded size.

Every TCP connection in the capture gets a :class:`Flow`: who sent the first SYN and how often, whether a SYN-ACK
or a RST came back, and how many bytes went each way (measured in sequence space, so retransmitted and duplicated
packets do not count twice). Payloads are never kept here: only control connections are reassembled, by their
session. When the table is full the flows idle the longest are dropped from it (their owners keep them); flows that
ended or went quiet are swept out of it as the capture goes on, so a capture that runs for hours stays small.
"""

from __future__ import annotations

from typing import Any

from ftpkit.capture.model import DataConn, Endpoint, ResetBy
from ftpkit.capture.packets import ACK, FIN, RST, SYN, reverse_key

MOD = 1 << 32
HALF = 1 << 31
SYN_REPEAT = 0.2
"""A SYN within this many seconds of the previous one is the same packet seen twice (two interfaces), not a
retransmission: TCP's first retransmission timeout is one second."""
FINISHED_KEEP = 60.0
"""Seconds a flow stays in the table after it ended (its last ACK, a retransmitted FIN still find it)."""
QUIET_KEEP = 900.0
"""Seconds without a packet after which a flow that is no FTP connection leaves the table."""
OWNED_KEEP = 3600.0
"""The same for a data connection that has not ended (its transfer keeps the counters anyway)."""


class Flow:
    """One TCP connection. Direction 0 is the sender of the first packet seen, 1 its peer."""

    __slots__ = ("data_first", "data_last", "ends", "ep", "first_ts", "hi", "hi32", "initiator", "isn", "key",
                 "last_syn", "last_ts", "owner", "probed", "rst_dir", "settled", "syn_ts", "synack", "syns", "verdict")

    def __init__(self, ep0: Endpoint, ep1: Endpoint, ts: float) -> None:
        self.ep = (ep0, ep1)
        self.key: bytes | None = None  # the table's key of direction 0 (packets.flow_key)
        self.settled = False  # a data connection whose fate is decided for good (established, refused)
        self.verdict: str | None = None  # the fate last reported for it
        self.first_ts = self.last_ts = ts
        self.initiator: int | None = None
        self.syns = 0
        self.syn_ts: float | None = None
        self.last_syn = 0.0
        self.synack = False
        self.rst_dir: int | None = None
        self.ends = [False, False]  # FIN or RST sent by that direction
        self.isn: list[int | None] = [None, None]  # sequence number of the first data byte, from the SYN
        self.hi32: list[int | None] = [None, None]  # highest sequence number + 1 seen, modulo 2**32
        self.hi = [0, 0]  # bytes covered so far (unwrapped)
        self.data_first: float | None = None
        self.data_last: float | None = None
        self.owner: Any = None  # a session (control connection), a transfer (data connection) or OTHER
        self.probed = 0  # bit per direction: its first payload was looked at

    def packet(self, d: int, ts: float, seq: int, flags: int, size: int) -> None:
        self.last_ts = ts
        if flags & (SYN | RST | FIN):
            self._control(d, ts, seq, flags)
        if size:
            hi32 = self.hi32[d]
            end = seq + size
            if hi32 is None:
                self.hi32[d] = end % MOD
                self.hi[d] = size
            else:
                delta = (end - hi32) % MOD
                if delta < HALF:
                    self.hi[d] += delta
                    self.hi32[d] = end % MOD
            if self.data_first is None:
                self.data_first = ts
            self.data_last = ts

    def _control(self, d: int, ts: float, seq: int, flags: int) -> None:
        if flags & SYN:
            if self.hi32[d] is None:
                self.isn[d] = self.hi32[d] = (seq + 1) % MOD
            if flags & ACK:
                self.synack = True
                if self.initiator is None:
                    self.initiator = 1 - d
            elif self.initiator in (None, d):
                self.initiator = d
                if self.syn_ts is None:
                    self.syn_ts = ts
                if self.syns == 0 or ts - self.last_syn >= SYN_REPEAT:
                    self.syns += 1
                    self.last_syn = ts
        if flags & RST:
            self.ends[d] = True
            if self.rst_dir is None:
                self.rst_dir = d
        if flags & FIN:
            self.ends[d] = True

    @property
    def finished(self) -> bool:
        """Reset, or closed by both sides."""
        return self.rst_dir is not None or all(self.ends)

    @property
    def syn_seen(self) -> bool:
        return self.syns > 0

    def client_dir(self) -> int:
        """The direction of the side that opened the connection (0 when the SYN is not in the capture)."""
        return self.initiator if self.initiator is not None else 0

    def to_data_conn(self) -> DataConn:
        i = self.client_dir()
        rst_by: ResetBy | None = None if self.rst_dir is None else (
            "initiator" if self.rst_dir == i else "responder")
        return DataConn(
            initiator=self.ep[i], responder=self.ep[1 - i], syn_seen=self.syn_seen, syn_ts=self.syn_ts,
            syns=self.syns, synack=self.synack, rst_by=rst_by, first_ts=self.first_ts, last_ts=self.last_ts,
            bytes_from_initiator=self.hi[i], bytes_from_responder=self.hi[1 - i], data_first_ts=self.data_first,
            data_last_ts=self.data_last, closed=all(self.ends),
        )


OTHER = object()
"""Owner of a flow that is neither a control nor a matched data connection."""


class FlowTable:
    """Flows by direction: flow key (:func:`~ftpkit.capture.packets.flow_key`) -> ``(flow, direction)``; at most
    ``limit`` flows."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.by_key: dict[bytes, tuple[Flow, int]] = {}
        self.count = 0
        self.next_sweep = limit
        self.created = 0
        self.evicted = 0

    def add(self, key: bytes, flow: Flow) -> None:
        flow.key = key
        self.by_key[key] = (flow, 0)
        self.by_key[reverse_key(key)] = (flow, 1)
        self.count += 1
        self.created += 1
        if self.count > self.next_sweep:
            self._evict()

    def remove(self, flow: Flow) -> None:
        """Forget ``flow``: a later packet of the same addresses and ports is a new flow."""
        if flow.key is None:
            return
        for key in (flow.key, reverse_key(flow.key)):
            entry = self.by_key.get(key)
            if entry is not None and entry[0] is flow:
                del self.by_key[key]
        self.count -= 1
        flow.key = None

    def sweep(self, now: float, busy: Any) -> int:
        """Drop flows that ended a while ago or went quiet (``busy``: the owner of control connections, which
        leave with their session). Returns how many were dropped."""
        drop = []
        for flow, d in self.by_key.values():
            if d:
                continue
            owner = flow.owner
            if owner.__class__ is busy:
                continue
            idle = now - flow.last_ts
            if flow.finished:
                if idle > FINISHED_KEEP:
                    drop.append(flow)
            elif idle > (QUIET_KEEP if owner is None or owner is OTHER else OWNED_KEEP):
                drop.append(flow)
        for flow in drop:
            self.remove(flow)
        self.evicted += len(drop)
        return len(drop)

    def _evict(self) -> None:
        """Drop the least recently active half of the flows (amortised: one sweep per ``limit / 2`` new flows).
        Open connections that belong to a session or a transfer stay: they are few and still being counted."""
        flows = {id(f): f for f, _ in self.by_key.values()}
        idle = [f for f in flows.values() if f.owner is None or f.owner is OTHER or f.finished]
        idle.sort(key=lambda f: f.last_ts)
        drop = {id(f) for f in idle[: len(flows) // 2]}
        for f in idle[: len(flows) // 2]:
            f.key = None
        self.by_key = {k: v for k, v in self.by_key.items() if id(v[0]) not in drop}
        self.count = len(flows) - len(drop)
        self.evicted += len(drop)
        self.next_sweep = max(self.limit, self.count + self.limit // 2)
