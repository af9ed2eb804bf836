"""The analyzer as a stream: packets in, in time order, from one or more capture points; events out as soon as
they are known (a session started, a data connection's fate, a session ended with its findings, two sessions
paired across a NAT). Files and live captures go through this same object.

Capture time drives everything: the clock is the latest packet's time stamp (or, in a live capture that is quiet,
the wall clock), and every decision that waits (an unanswered SYN, a quiet session, a NAT pair) is taken when that
clock passes its deadline. Memory stays flat however long it runs: a session leaves when it ends (unless ``keep``
asks to collect them for a report), data connections are counters, quiet flows are swept out of the tables, and the
little kept across sessions (failed logins per client, sessions waiting for their NAT twin) is bounded.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable

from ftpkit.capture.analyzer import Options, PointAnalysis
from ftpkit.capture.events import (
    ConnectionDecided,
    DecidedBy,
    EndReason,
    Event,
    NatPaired,
    SessionEnded,
    SessionStarted,
)
from ftpkit.capture.findings import MAX_EVIDENCE, FailedLogins, session_findings
from ftpkit.capture.flows import Flow
from ftpkit.capture.model import Fate, NatPair, Session, Transfer
from ftpkit.capture.nat import NatMatcher
from ftpkit.capture.sessions import SessionBuilder

TICK = 1.0  # seconds of capture time between two looks at the deadlines, at most
SWEEP = 60.0  # seconds of capture time between two sweeps for quiet sessions and flows
LOGIN_GROUPS = 10_000  # (client address, server) pairs whose failed logins are remembered


class LoginHistory:
    """The failed logins of ended sessions, per client address and server: the last few of each, few groups."""

    def __init__(self, limit: int = LOGIN_GROUPS) -> None:
        self.limit = limit
        self.groups: OrderedDict[tuple[str, object], deque[FailedLogins]] = OrderedDict()

    def add(self, s: Session) -> None:
        key = (s.client.ip, s.server)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = deque(maxlen=MAX_EVIDENCE)
            if len(self.groups) > self.limit:
                self.groups.popitem(last=False)
        else:
            self.groups.move_to_end(key)
        group.append(FailedLogins.of(s))

    def of(self, s: Session) -> list[FailedLogins]:
        return list(self.groups.get((s.client.ip, s.server), ()))


class Analyzer:
    """``point(name).packet(ts, linktype, frame)`` for each packet in time order, ``advance(now)`` when time passes
    without packets, ``close()`` at the end. ``on_event`` gets every :mod:`~ftpkit.capture.events` event;
    with ``keep`` the ended sessions and NAT pairs are collected in ``sessions`` and ``nat_pairs``."""

    def __init__(self, options: Options | None = None, on_event: Callable[[Event], None] | None = None,
                 keep: bool = True) -> None:
        self.options = options or Options()
        self.on_event = on_event
        self.keep = keep
        self.points: dict[str, PointAnalysis] = {}
        self.sessions: list[Session] = []
        self.nat_pairs: list[NatPair] = []
        self.now = -math.inf
        self.next_tick = -math.inf  # the first packet looks at the clock
        self.next_sweep = math.inf
        self.logins = LoginHistory()
        self.nat = NatMatcher()
        self.ended = 0  # sessions ended so far
        self.problems = 0  # their findings of severity warn or fail, and those of NAT pairs
        self._seq = 0
        self._index = 0

    # --- capture points and the clock -----------------------------------------------------------------------------
    def point(self, name: str) -> PointAnalysis:
        point = self.points.get(name)
        if point is None:
            point = self.points[name] = PointAnalysis(name, self)
        return point

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def wake_at(self, deadline: float) -> None:
        if deadline < self.next_tick:
            self.next_tick = deadline

    def advance(self, now: float) -> None:
        """The capture's clock reached ``now``: take the decisions whose time has come."""
        if now > self.now:
            self.now = now
        now = self.now
        if self.next_sweep == math.inf:
            self.next_sweep = now + SWEEP
        nxt = now + TICK
        for point in self.points.values():
            deadline = point.expire(now)
            if deadline is not None and deadline < nxt:
                nxt = deadline
        if now >= self.next_sweep:
            self.next_sweep = now + SWEEP
            for point in list(self.points.values()):
                point.idle(now)
                point.table.sweep(now, SessionBuilder)
            for pair in self.nat.expire(now):
                self._paired(pair)
        self.next_tick = nxt

    def close(self) -> None:
        """The capture ended: every open session ends (its findings with what was seen), NAT pairs are settled."""
        builders = sorted((b for p in self.points.values() for b in p.builders.values()), key=lambda b: b.seq)
        for builder in builders:
            builder.hub.ended(builder, builder.session.end, "capture-end")
        for pair in self.nat.drain():
            self._paired(pair)

    @property
    def open_sessions(self) -> int:
        return sum(len(p.builders) for p in self.points.values())

    @property
    def segments(self) -> int:
        return sum(p.segments for p in self.points.values())

    @property
    def flows(self) -> int:
        return sum(p.table.created for p in self.points.values())

    # --- what the capture points report ---------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _number(self, s: Session) -> None:
        if s.index == 0:
            self._index += 1
            s.index = self._index

    def session_started(self, builder: SessionBuilder) -> None:
        s = builder.session
        self._number(s)
        self._emit(SessionStarted(max(s.start, self.now), s))

    def connection_decided(self, session: Session, transfer: Transfer | None, flow: Flow, fate: Fate, ts: float,
                           by: DecidedBy) -> None:
        if self.on_event is not None:
            self.on_event(ConnectionDecided(ts, session, transfer, flow.to_data_conn(), fate, by))

    def session_ended(self, builder: SessionBuilder, ts: float, reason: EndReason) -> None:
        s = builder.session
        self._number(s)
        others: list[FailedLogins] = []
        if s.login_failures:
            others = self.logins.of(s)
            group = (s.client.ip, s.server)
            for point in self.points.values():  # sessions still open from the same client to the same server
                for b in point.builders.values():
                    o = b.session
                    if o.login_failures and o.index and (o.client.ip, o.server) == group:
                        others.append(FailedLogins.of(o))
            others.sort(key=lambda o: o.index)
        s.findings = session_findings(s, self.options.slow_reply, others)
        if s.login_failures:
            self.logins.add(s)
        self.ended += 1
        self.problems += sum(1 for f in s.findings if f.severity in ("warn", "fail"))
        self._emit(SessionEnded(ts, s, reason))
        if self.keep:
            self.sessions.append(s)
        for pair in self.nat.add(s, self.now):
            self._paired(pair)

    def _paired(self, pair: NatPair) -> None:
        self.problems += sum(1 for f in pair.findings if f.severity in ("warn", "fail"))
        self._emit(NatPaired(max(pair.inside.end, pair.outside.end), pair))
        if self.keep:
            self.nat_pairs.append(pair)
