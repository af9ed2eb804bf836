"""The defender: per-source scores for failed logins, protocol errors and limit hits; bans past a threshold.

As SFTPGo's defender: each event adds its score to the source's events within the observation window; when the
sum reaches ``threshold`` the source is banned for ``ban_time`` seconds, longer by ``ban_increment`` percent for
every earlier ban of the same source. Networks in the allow-list are never banned. Bans are logged, kept in a JSON
file (so they survive a restart) that ``ftpkit ban list|lift`` reads and edits: the server notices the change by
the file's modification time. A source is an IPv4 address, or the /64 of an IPv6 address (one host owns those).

Bounded: at most ``max_sources`` sources are tracked (the oldest forgotten first), events are pruned by time.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger("ftpkit.server")

Event = Literal["login_failed", "protocol_error", "limit_exceeded", "tls_failed"]


@dataclass(frozen=True, slots=True)
class DefenderSettings:
    enabled: bool = True
    threshold: int = 15
    observation_time: float = 600.0
    ban_time: float = 1800.0
    ban_increment: float = 100.0  # percent longer for every earlier ban of the same source
    scores: dict[str, int] = field(default_factory=lambda: {
        "login_failed": 3, "protocol_error": 1, "limit_exceeded": 3, "tls_failed": 2})
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    state_file: Path | None = None
    max_sources: int = 100000


@functools.lru_cache(maxsize=4096)  # asked at every connection, mostly for the same addresses
def source_of(ip: str) -> str:
    """The unit a ban applies to: the address, or its /64 for IPv6."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr.ipv4_mapped or addr) if isinstance(addr, ipaddress.IPv6Address) else str(addr)


@dataclass
class Ban:
    source: str
    until: float  # wall-clock time (survives a restart)
    count: int  # bans of this source so far, this one included
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "until": self.until, "count": self.count, "reason": self.reason}


def read_bans(path: Path) -> dict[str, Ban]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("defender: cannot read %s: %s (starting without its bans)", path, exc)
        return {}
    out: dict[str, Ban] = {}
    for item in data.get("bans", []) if isinstance(data, dict) else []:
        try:
            ban = Ban(str(item["source"]), float(item["until"]), int(item["count"]), str(item.get("reason", "")))
        except (KeyError, TypeError, ValueError):
            continue
        out[ban.source] = ban
    return out


def write_bans(path: Path, bans: Iterable[Ban]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"bans": [b.to_json() for b in bans]}, indent=1) + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


class Defender:
    """Scores and bans. ``clock`` gives wall-clock seconds (injected so tests need no sleeps)."""

    def __init__(self, settings: DefenderSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.events: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self.bans: dict[str, Ban] = {}
        self.history: dict[str, int] = {}  # earlier bans per source (for the increment)
        self.banned_total = 0
        self._mtime: float | None = None
        if settings.state_file is not None:
            self._reload(force=True)

    # --- the ban list --------------------------------------------------------------------------------------
    def _reload(self, force: bool = False) -> None:
        path = self.settings.state_file
        if path is None:
            return
        try:
            mtime = os.stat(path).st_mtime  # at every connection: not through pathlib
        except OSError:
            mtime = None
        if not force and mtime == self._mtime:
            return
        self._mtime = mtime
        self.bans = read_bans(path)
        for ban in self.bans.values():
            self.history[ban.source] = max(self.history.get(ban.source, 0), ban.count)

    def _save(self) -> None:
        path = self.settings.state_file
        if path is None:
            return
        try:
            write_bans(path, self.bans.values())
            self._mtime = path.stat().st_mtime
        except OSError as exc:
            log.warning("defender: cannot write %s: %s (bans stay in memory)", path, exc)

    def allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.settings.allow)

    def banned(self, ip: str) -> Ban | None:
        """The ban in force for ``ip``, if any (lifted bans in the state file are noticed here)."""
        if not self.settings.enabled:
            return None
        self._reload()
        ban = self.bans.get(source_of(ip))
        if ban is None:
            return None
        if ban.until <= self.clock():
            del self.bans[ban.source]
            self._save()
            return None
        return ban

    # --- events --------------------------------------------------------------------------------------------
    def record(self, ip: str, event: Event) -> Ban | None:
        """Count an event from ``ip``; the new ban when this one crossed the threshold."""
        s = self.settings
        if not s.enabled or self.allowed(ip):
            return None
        points = s.scores.get(event, 1)
        source = source_of(ip)
        if points <= 0 or source in self.bans:  # 0: this kind of event is not counted
            return None
        now = self.clock()
        events = self.events.pop(source, None) or deque()
        self.events[source] = events  # most recent last
        while len(self.events) > s.max_sources:
            self.events.popitem(last=False)
        events.append((now, points))
        while events and events[0][0] < now - s.observation_time:
            events.popleft()
        total = sum(score for _, score in events)
        if total < s.threshold:
            return None
        del self.events[source]
        count = self.history.get(source, 0) + 1
        self.history[source] = count
        seconds = s.ban_time * (1 + s.ban_increment / 100) ** (count - 1)
        ban = Ban(source, now + seconds, count, f"score {total} within {s.observation_time:g} s (last: {event})")
        self.bans[source] = ban
        self.banned_total += 1
        self._save()
        log.warning("defender: banned %s for %.0f s (ban %d): %s", source, seconds, count, ban.reason)
        return ban

    def lift(self, source: str) -> bool:
        self._reload()
        key = source_of(source) if "/" not in source else source
        found = self.bans.pop(key, None) is not None
        if found:
            self._save()
        with contextlib.suppress(KeyError):
            del self.events[key]
        return found
