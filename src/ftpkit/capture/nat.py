"""The same session captured on both sides of a NAT: match the two, tell which is the client's side, and show
what an FTP helper (ALG) rewrote in transit.

Two sessions are the same when their command sequences (PORT/EPRT arguments aside) are identical and they start
within ``WINDOW`` seconds, but their address pairs differ; when both sides saw the SYN, the client's initial
sequence number (which NAT keeps) must agree too. The client's side is decided by timing, which is immune
to a clock offset between two capturing machines: commands are seen first on the client's side and replies first
on the server's side, so the sum of the two median lags is positive from the client's side.

:class:`NatMatcher` does it as sessions end: a session is paired at once with an ended one whose client initial
sequence number is the same; the others wait (at most ``WINDOW`` seconds of capture time, at most ``POOL`` of them)
and are matched by commands and timing when they leave the pool or the capture ends. Twins differ in an address
(translation changes one): two sessions between the same two addresses are two sessions.
"""

from __future__ import annotations

import statistics

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
            candidates = [b for b in free if _twins(a, b, WINDOW)]
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
    """Pairs sessions as they end, each in constant time; memory bounded by ``WINDOW`` seconds and ``POOL``
    sessions."""

    def __init__(self, window: float = WINDOW, limit: int = POOL) -> None:
        self.window = window
        self.limit = limit
        self.pool: dict[int, tuple[tuple, Session]] = {}  # id -> (signature, session), in the order they ended
        self.by_isn: dict[tuple[tuple, int], list[Session]] = {}
        self.by_sig: dict[tuple, dict[tuple[str, str], list[Session]]] = {}  # signature -> address pair -> ...

    def __len__(self) -> int:
        return len(self.pool)

    def add(self, s: Session, now: float) -> list[NatPair]:
        """``s`` ended: its pair if an ended session has the same commands and the same client ISN; the pairs of
        sessions that waited too long."""
        sig = _signature(s)
        if len(sig) < 2:
            return self.expire(now)
        if s.client_isn is not None:
            same = [c for c in self.by_isn.get((sig, s.client_isn), ()) if _twins(c, s, self.window)]
            if same:
                b = min(same, key=lambda c: abs(c.start - s.start))
                self._remove(b)
                inside, outside = (s, b) if _inside_first(s, b) else (b, s)
                return [_pair(inside, outside), *self.expire(now)]
        self.pool[id(s)] = (sig, s)
        if s.client_isn is not None:
            self.by_isn.setdefault((sig, s.client_isn), []).append(s)
        self.by_sig.setdefault(sig, {}).setdefault((s.client.ip, s.server.ip), []).append(s)
        return self.expire(now)

    def _remove(self, s: Session) -> tuple:
        sig, _ = self.pool.pop(id(s))
        if s.client_isn is not None:
            _drop(self.by_isn, (sig, s.client_isn), s)
        pairs = self.by_sig[sig]
        _drop(pairs, (s.client.ip, s.server.ip), s)
        if not pairs:
            del self.by_sig[sig]
        return sig

    def expire(self, now: float) -> list[NatPair]:
        """Sessions that ended more than ``window`` seconds ago (or beyond the pool's size) leave the pool; one that
        pairs by commands and timing alone with a session still waiting (at another address) is paired first."""
        pairs: list[NatPair] = []
        while self.pool:
            sig, s = next(iter(self.pool.values()))
            if s.end >= now - self.window and len(self.pool) <= self.limit:
                break
            self._remove(s)
            candidates: list[Session] = []
            for addresses, group in self.by_sig.get(sig, {}).items():
                if addresses != (s.client.ip, s.server.ip):
                    candidates += group[-SCAN:]
            found = match_sessions([s, *candidates[-SCAN:]]) if candidates else []
            for pair in found:
                other = pair.outside if pair.inside is s else pair.inside
                if other is s or id(other) not in self.pool:
                    continue
                self._remove(other)
                pairs.append(pair)
                break
        return pairs

    def drain(self) -> list[NatPair]:
        """The capture ended: pair what can be paired among the sessions still waiting."""
        pairs = match_sessions([s for _, s in self.pool.values()])
        self.pool.clear()
        self.by_isn.clear()
        self.by_sig.clear()
        return pairs


SCAN = 256
"""Sessions at other addresses a session leaving the pool is compared with, at most."""


def _twins(a: Session, b: Session, window: float) -> bool:
    """Could be the same session on both sides of a NAT: address translation changed an address."""
    return (a.client.ip, a.server.ip) != (b.client.ip, b.server.ip) and abs(a.start - b.start) <= window


def _drop(index: dict, key: object, s: Session) -> None:
    group = index.get(key)
    if group is None:
        return
    for i, x in enumerate(group):
        if x is s:
            del group[i]
            break
    if not group:
        del index[key]
