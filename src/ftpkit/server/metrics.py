"""The server's metrics, in Prometheus terms, through prometheus_client: one registry per server (so servers in one
process never mix), names with the ``ftpkit_`` prefix, ``_total`` counters, ``_seconds`` and ``_bytes`` units.

Labels are bounded: results, reasons, directions, modes and diagnosis codes from fixed sets; never a user name, a
path or an address. Values that the server keeps anyway (sessions open, passive ports in use, bans, password
verifications) are read when scraped, by :class:`_StateCollector`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

disable_created_metrics()  # no ``_created`` series beside each counter: ftpkit_start_time_seconds says it once

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)


@dataclass
class State:
    """What the server knows at any moment, read at each scrape (callables of the server's own state)."""

    sessions_open: Callable[[], int] = lambda: 0
    passive_in_use: Callable[[], int] = lambda: 0
    passive_size: Callable[[], int] = lambda: 0
    bans_active: Callable[[], int] = lambda: 0
    bans_issued: Callable[[], int] = lambda: 0
    hashed: Callable[[], int] = lambda: 0
    cached: Callable[[], int] = lambda: 0
    hooks_running: Callable[[], int] = lambda: 0
    accepting: Callable[[], bool] = lambda: False


class _StateCollector(Collector):
    def __init__(self, state: State) -> None:
        self.state = state

    def describe(self) -> Iterator[Metric]:
        return iter(())  # computed at each scrape; names are checked by the tests (promtool)

    def collect(self) -> Iterator[Metric]:
        s = self.state
        yield GaugeMetricFamily("ftpkit_sessions_open", "Control connections open now", value=s.sessions_open())
        yield GaugeMetricFamily("ftpkit_passive_ports_in_use", "Passive ports announced or in use now",
                                value=s.passive_in_use())
        yield GaugeMetricFamily("ftpkit_passive_ports", "Size of the passive port range", value=s.passive_size())
        yield GaugeMetricFamily("ftpkit_bans_active", "Sources banned by the defender now", value=s.bans_active())
        yield CounterMetricFamily("ftpkit_bans", "Bans the defender issued since start", value=s.bans_issued())
        verifications = CounterMetricFamily("ftpkit_password_verifications",
                                            "Password checks: hashed (the hash ran) or cached (a remembered "
                                            "success)", labels=["method"])
        verifications.add_metric(["hashed"], s.hashed())
        verifications.add_metric(["cached"], s.cached())
        yield verifications
        yield GaugeMetricFamily("ftpkit_hooks_running", "Event hooks running or waiting now",
                                value=s.hooks_running())
        yield GaugeMetricFamily("ftpkit_accepting", "1 while the FTP listener accepts, 0 while stopping",
                                value=1 if s.accepting() else 0)


M = TypeVar("M", bound=MetricWrapperBase)


class Metrics:
    """Every counter the server updates; :meth:`exposition` is the text a scrape returns."""

    def __init__(self, state: State | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.state = state or State()
        r = self.registry
        self.started = time.time()
        self.sessions = Counter("ftpkit_sessions", "Control connections ended, by result (logged_in, not_logged_in, "
                                "probe: closed without a command, refused: a limit, banned)", ["result"], registry=r)
        self.logins = Counter("ftpkit_logins", "Login attempts by result and reason", ["result", "reason"],
                              registry=r)
        self.transfers = Counter("ftpkit_transfers", "Transfers ended, by direction (download, upload, listing), "
                                 "data-connection mode and result (ok, failed, aborted)",
                                 ["direction", "mode", "result"], registry=r)
        self.transfer_bytes = Counter("ftpkit_transfer_bytes", "Bytes moved over data connections, by direction",
                                      ["direction"], registry=r)
        self.duration = Histogram("ftpkit_transfer_duration_seconds", "Duration of completed transfers, from the "
                                  "data connection's opening to the last byte", ["direction"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.data_failures = Counter("ftpkit_data_connection_failures", "Data connections that could not be opened "
                                     "or were refused, by mode and diagnosis code", ["mode", "code"], registry=r)
        self.diagnoses = Counter("ftpkit_diagnoses", "Problems the server classified (failures and warnings), by "
                                 "mode and diagnosis code", ["mode", "code"], registry=r)
        self.passive_exhausted = Counter("ftpkit_passive_ports_exhausted", "Passive announcements refused for want "
                                         "of a port: the whole range (range) or the client's share (client)",
                                         ["scope"], registry=r)
        self.tls_failures = Counter("ftpkit_tls_handshake_failures", "TLS handshakes that failed, by connection "
                                    "(control, data) and reason", ["connection", "reason"], registry=r)
        self.refused_connections = Counter("ftpkit_refused_connections", "Control connections turned away at "
                                           "once, by reason (banned, limit)", ["reason"], registry=r)
        self.hooks = Counter("ftpkit_hooks", "Event hooks run, by event and result (ok, failed, timeout, refused: a "
                             "pre-upload hook said no, dropped: too many waiting)", ["event", "result"], registry=r)
        self.hook_duration = Histogram("ftpkit_hook_duration_seconds", "Duration of event hooks", ["event"],
                                       buckets=DURATION_BUCKETS, registry=r)
        self.start_time = Gauge("ftpkit_start_time_seconds", "When the server started (Unix time)", registry=r)
        self.start_time.set(self.started)
        r.register(_StateCollector(self.state))
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, kept: prometheus_client checks the values and takes a lock on every
        ``labels()`` call, five times a session; the label sets are bounded (see above), so this cache is too."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found  # type: ignore[return-value]  # labels() returns the metric's own type

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
