"""The same session captured on both sides of a NAT: match the two, tell which is the client's side, and show
what an FTP helper (ALG) rewrote in transit.

Two sessions are the same when their command sequences (PORT/EPRT arguments aside) are identical and they start
within ``WINDOW`` seconds, but their address pairs differ; when both sides saw the SYN, the client's initial
sequence number (which NAT keeps) must agree too. The client's side is decided by timing, which is immune
to a clock offset between two capturing machines: commands are seen first on the client's side and replies first
on the server's side, so the sum of the two median lags is positive from the client's side.

:class:`NatMatcher` does it as sessions end: a session is paired at once with an ended one whose client initial
sequence number is the same; the others wait (at most ``WINDOW`` seconds of capture time, at most ``POOL`` of them)
and are matched by :func:`match_sessions` when they leave the pool or the capture ends.
"""

from __future__ import annotations

import statistics
from collections import deque

from ftpkit.capture.findings import is_global
from ftpkit.capture.model import LogEntry, NatPair, Session
from ftpkit.diagnosis import Finding

WINDOW = 300.0
POOL = 2000
ANNOUNCING = frozenset({"PORT", "EPRT"})


def _signature(s: Session) -> tuple[tuple[str, str | None], ...]:
    return tuple((e.verb or "", None if e.verb in ANNOUNCING else e.arg) for e in s.commands())


def _replies(s: Session) -> list[LogEntry]:
    return [e for e in s.log if e.side == "server"]


def _lag(a: list[LogEntry], b: list[LogEntry]) -> float:
    """Median of b's time minus a's time over lines matched by position."""
    lags = [y.ts - x.ts for x, y in zip(a, b, strict=False)]
    return statistics.median(lags) if lags else 0.0


def _inside_first(a: Session, b: Session) -> bool:
    """True when ``a`` was captured on the client's side of the NAT."""
    score = _lag(a.commands(), b.commands()) + _lag(_replies(b), _replies(a))
    if score:
        return score > 0
    if is_global(a.client.ip) != is_global(b.client.ip):
        return not is_global(a.client.ip)
    return a.file <= b.file


def match_sessions(sessions: list[Session]) -> list[NatPair]:
    by_signature: dict[tuple, list[Session]] = {}
    for s in sessions:
        sig = _signature(s)
        if len(sig) >= 2:
            by_signature.setdefault(sig, []).append(s)
    pairs: list[NatPair] = []
    for group in by_signature.values():
        free = sorted(group, key=lambda s: s.start)
        while len(free) >= 2:
            a = free.pop(0)
            candidates = [b for b in free if (b.client, b.server) != (a.client, a.server)
                          and abs(b.start - a.start) <= WINDOW]
            if not candidates:
                continue
            # The client's initial sequence number survives NAT (address translation does not renumber): when
            # both sides saw the SYN it tells the pair apart from look-alike sessions that started together.
            same_isn = [c for c in candidates if a.client_isn is not None and c.client_isn == a.client_isn]
            if same_isn:
                candidates = same_isn
            elif a.client_isn is not None:
                candidates = [c for c in candidates if c.client_isn is None] or candidates
            b = min(candidates, key=lambda c: abs(c.start - a.start))
            free.remove(b)
            inside, outside = (a, b) if _inside_first(a, b) else (b, a)
            pairs.append(_pair(inside, outside))
    return pairs


def _pair(inside: Session, outside: Session) -> NatPair:
    pair = NatPair(inside, outside)
    for sent, received in zip(inside.commands(), outside.commands(), strict=False):
        if sent.verb in ANNOUNCING and sent.text != received.text:
            pair.rewrites.append((sent.text, received.text))
            pair.findings.append(Finding("alg-rewrote-port", "info",
                                         {"command": sent.verb or "", "sent": sent.text, "received": received.text},
                                         (f"#{inside.index} {inside.client} > {inside.server}: {sent.text}",
                                          f"#{outside.index} {outside.client} > {outside.server}: {received.text}")))
    passive_in = [e for e in _replies(inside) if e.code in (227, 229)]
    passive_out = [e for e in _replies(outside) if e.code in (227, 229)]
    for received, sent in zip(passive_in, passive_out, strict=False):
        if sent.text != received.text:
            pair.rewrites.append((sent.text, received.text))
            pair.findings.append(Finding("alg-rewrote-port", "info",
                                         {"command": str(sent.code), "sent": sent.text, "received": received.text},
                                         (f"#{outside.index} {outside.server} > {outside.client}: {sent.text}",
                                          f"#{inside.index} {inside.server} > {inside.client}: {received.text}")))
    if inside.client.ip != outside.client.ip:
        unchanged = [f"#{outside.index} {outside.client} > {outside.server}: {e.text}"
                     for e, o in zip(inside.commands(), outside.commands(), strict=False)
                     if e.verb in ANNOUNCING and e.text == o.text]
        pair.findings.append(Finding("nat-detected", "info", {"seen": outside.client.ip, "local": inside.client.ip},
                                     (f"#{inside.index} {inside.client} > {inside.server}",
                                      f"#{outside.index} {outside.client} > {outside.server}", *unchanged[:4])))
    return pair


class NatMatcher:
    """Pairs sessions as they end; memory bounded by ``WINDOW`` seconds and ``POOL`` sessions."""

    def __init__(self, window: float = WINDOW, limit: int = POOL) -> None:
        self.window = window
        self.limit = limit
        self.pool: dict[tuple, list[Session]] = {}
        self.order: deque[tuple[float, tuple, Session]] = deque()  # (end, signature, session), oldest first

    def __len__(self) -> int:
        return sum(len(group) for group in self.pool.values())

    def add(self, s: Session, now: float) -> list[NatPair]:
        """``s`` ended: its pair if an ended session has the same commands and the same client ISN; the pairs of
        sessions that waited too long."""
        sig = _signature(s)
        if len(sig) < 2:
            return self.expire(now)
        group = self.pool.setdefault(sig, [])
        same = [c for c in group if (c.client, c.server) != (s.client, s.server)
                and abs(c.start - s.start) <= self.window and s.client_isn is not None and c.client_isn == s.client_isn]
        if same:
            b = min(same, key=lambda c: abs(c.start - s.start))
            group.remove(b)
            if not group:
                del self.pool[sig]
            inside, outside = (s, b) if _inside_first(s, b) else (b, s)
            return [_pair(inside, outside), *self.expire(now)]
        group.append(s)
        self.order.append((s.end, sig, s))
        return self.expire(now)

    def expire(self, now: float) -> list[NatPair]:
        """Sessions that ended more than ``window`` seconds ago (or beyond the pool's size) leave the pool; those
        among them that pair by commands and timing alone are paired first."""
        leaving: list[tuple[tuple, Session]] = []
        while self.order and (self.order[0][0] < now - self.window or len(self.order) > self.limit):
            _, sig, s = self.order.popleft()
            if s in self.pool.get(sig, ()):
                leaving.append((sig, s))
        pairs: list[NatPair] = []
        for sig in {sig for sig, _ in leaving}:
            group = self.pool.pop(sig, [])
            found = match_sessions(group)
            pairs += found
            paired = {id(x) for p in found for x in (p.inside, p.outside)}
            gone = {id(s) for g, s in leaving if g == sig}
            rest = [s for s in group if id(s) not in paired and id(s) not in gone]
            if rest:
                self.pool[sig] = rest
        if pairs or leaving:
            kept = {id(s) for group in self.pool.values() for s in group}
            self.order = deque(item for item in self.order if id(item[2]) in kept)
        return pairs

    def drain(self) -> list[NatPair]:
        """The capture ended: pair what can be paired among the sessions still waiting."""
        pairs = [p for group in self.pool.values() for p in match_sessions(group)]
        self.pool.clear()
        self.order.clear()
        return pairs
