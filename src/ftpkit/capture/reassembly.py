"""TCP reassembly of one direction of a control connection: bytes in sequence order, each byte once.

Retransmitted and overlapping segments are trimmed to what is new; segments that arrive early wait (bounded) until
the hole before them is filled. A hole the capture never fills (the capture dropped a packet) is skipped when the
peer acknowledges beyond it, when too much waits behind it, or at the end; the skip is reported as a gap so the
FTP layer can resynchronise on the next line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MOD = 1 << 32
HALF = 1 << 31
MAX_PENDING = 256 * 1024


@dataclass(slots=True)
class Chunk:
    """Bytes ready for the FTP layer; ``gap`` > 0: that many bytes before them are missing from the capture."""

    data: bytes
    gap: int = 0


@dataclass(slots=True)
class Reassembler:
    next_seq: int | None = None  # the sequence number of the next byte to deliver; None until the first segment
    started_at_syn: bool = False
    pending: dict[int, bytes] = field(default_factory=dict)
    pending_bytes: int = 0
    delivered: int = 0
    retransmitted: int = 0  # bytes seen more than once
    missing: int = 0  # bytes skipped over holes

    def syn(self, seq: int) -> None:
        if self.next_seq is None:
            self.next_seq = (seq + 1) % MOD
            self.started_at_syn = True

    def segment(self, seq: int, payload: bytes) -> list[Chunk]:
        if not payload:
            return []
        if self.next_seq is None:
            self.next_seq = seq
        ahead = (seq - self.next_seq) % MOD
        if ahead >= HALF:  # starts before next_seq: a retransmission, maybe with new bytes at its end
            old = MOD - ahead
            if old >= len(payload):
                self.retransmitted += len(payload)
                return []
            self.retransmitted += old
            payload, ahead = payload[old:], 0
        if ahead:
            if len(payload) > len(self.pending.get(seq, b"")):
                self.pending_bytes += len(payload) - len(self.pending.get(seq, b""))
                self.pending[seq] = payload
            if self.pending_bytes > MAX_PENDING:
                return self.skip_gap()
            return []
        out = [self._deliver(payload)]
        out += self._drain()
        return out

    def acked(self, ack: int) -> list[Chunk]:
        """The peer acknowledged up to ``ack``: a hole before it was received, only not captured. Skip it."""
        if not self.pending or self.next_seq is None:
            return []
        if 0 < (ack - self.next_seq) % MOD < HALF:
            return self.skip_gap()
        return []

    def skip_gap(self) -> list[Chunk]:
        """Give up on the hole before the earliest waiting segment."""
        if not self.pending or self.next_seq is None:
            return []
        base = self.next_seq
        seq = min(self.pending, key=lambda s: (s - base) % MOD)
        gap = (seq - base) % MOD
        self.missing += gap
        self.next_seq = seq
        out = self._drain()
        if out:
            out[0].gap = gap
        return out

    def _deliver(self, payload: bytes) -> Chunk:
        assert self.next_seq is not None  # set by the segment or SYN that led here
        self.next_seq = (self.next_seq + len(payload)) % MOD
        self.delivered += len(payload)
        return Chunk(payload)

    def _drain(self) -> list[Chunk]:
        out: list[Chunk] = []
        assert self.next_seq is not None  # set by the segment or SYN that led here
        while self.pending:
            progressed = False
            for seq in list(self.pending):
                ahead = (seq - self.next_seq) % MOD
                payload = self.pending[seq]
                if ahead >= HALF:  # overlaps what was delivered
                    old = MOD - ahead
                    del self.pending[seq]
                    self.pending_bytes -= len(payload)
                    if old < len(payload):
                        self.retransmitted += old
                        out.append(self._deliver(payload[old:]))
                    else:
                        self.retransmitted += len(payload)
                    progressed = True
                elif ahead == 0:
                    del self.pending[seq]
                    self.pending_bytes -= len(payload)
                    out.append(self._deliver(payload))
                    progressed = True
            if not progressed:
                break
        return out
