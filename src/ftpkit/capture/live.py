"""A live capture: tcpdump (or dumpcap) on one or more interfaces, its pcap stream read from a pipe as it comes
and fed to the same :class:`~ftpkit.capture.engine.Analyzer` that reads files, whose events are reported at once.

The capture filter is ``tcp`` (with ``--filter``: ``tcp and (EXPR)``). A BPF program is fixed when the capture
starts and keeps no state, so it cannot follow a control connection: the port of a data connection is known only
once PORT or 227 has been read, and changing the filter then would mean restarting the capture and losing packets.
``tcp port 21 or (tcp and portrange 1024-65535)`` would pass nearly the same packets (every connection has an
ephemeral port on one side) while missing a server that announces a port below 1024. So all TCP is captured and
the analyzer drops what is not FTP at its first packet (the flow table's fast path). Nor can the filter give data
connections a shorter snap length than control connections: a filter libpcap compiles returns one length for
every packet it accepts. So packets are captured whole; a data connection's packets cost little all the same: once
its fate is settled the analyzer counts them where they lie in the pipe's bytes (``PointAnalysis.feed``).

On ``lo`` the kernel passes every packet to the capture twice, as sent and as received; libpcap drops the sent copy
in user space, so the analyzer sees each packet once, on ``lo`` as anywhere (``tcpdump -Q in`` changes nothing
there). The ``inbound`` qualifier would have the kernel drop it instead, but libpcap 1.10 runs the filter in user
space over what the ring held when it was set, where ``inbound`` cannot be evaluated: the first packets of the
capture were lost (268 of a replay here). So it is not used.

Between the tool and the analyzer a reader thread per tool empties the pipe into a backlog in memory (at most
``BACKLOG`` bytes), so the tool never waits for the analyzer while the analyzer catches up after a burst or a
moment without CPU: only a backlog beyond that bound holds the tool back, and then the kernel drops packets and
tcpdump's counter says so. The summary tells how far behind the analyzer was at most. The reader reads into
buffers used again and again, and the analyzer cuts the records out of them in place.

The tool hands packets over in blocks (libpcap's TPACKET_V3: a block when it is full, or at the latest after the
tool's read time-out, one second for tcpdump), not one by one: ``--immediate-mode``, a wake-up per packet, made
tcpdump drop a third of the packets of a 1 Gbit/s replay here, and the analyzer does not need it. So a packet
reaches the analyzer up to a second after it was captured; the clock that decides unanswered SYNs while nothing
comes is held back by ``LAG`` for it, and a stop waits ``FLUSH`` for the last block before it stops the tool.

Every process started here is stopped by its PID: SIGINT, so the tool prints its counters (``N packets dropped by
kernel``), SIGKILL after a grace period. Waits are bounded; the loop wakes at least every ``WAKE`` seconds, so
the clock moves (and unanswered SYNs are decided) while nothing is captured. SIGINT and SIGTERM end the capture
cleanly (the sessions still open are reported), through a wake-up pipe rather than an exception in the middle of a
packet.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from ftpkit.capture.analyzer import Options
from ftpkit.capture.engine import Analyzer
from ftpkit.capture.events import Event
from ftpkit.capture.records import CaptureError, RecordParser
from ftpkit.capture.tools import READY, LiveError, ToolStats, explain_failure, find_tool, parse_stats, tool_argv

__all__ = ["LiveError", "LiveOptions", "LiveResult", "ToolStats", "find_tool", "parse_stats", "run_live",
           "tool_argv"]

START_TIMEOUT = 10.0  # seconds for a capture tool to start capturing
STOP_GRACE = 5.0  # seconds a tool has to flush and exit after SIGINT
WAKE = 0.25  # seconds between two looks at the clock when nothing comes
BLOCK_TIMEOUT = 1.0  # seconds a capture tool may hold packets before handing them over (tcpdump's read time-out)
LAG = BLOCK_TIMEOUT + 0.5  # seconds the wall clock is held back: packets captured by then may still be on their way
FLUSH = BLOCK_TIMEOUT + 0.2  # seconds read on after a stop was asked for, before the tool is stopped
READ = 1 << 20
GATHER = 0.005  # seconds a reader waits after a small read (a full pipe at 1 Gbit/s takes 8 ms)
PIPE_SIZES = (16 << 20, 1 << 20)  # the pipe from the tool (more than /proc/sys/fs/pipe-max-size needs privilege)
BACKLOG = 256 << 20  # bytes of memory holding what was read from the tools and not yet analysed, at most
POOL = 32  # read buffers kept for the next reads (32 MiB at most, after a burst)
DRAIN_LIMIT = 120.0  # seconds the analyzer has, once the tools stopped, to work through the backlog

Stop = Literal["interrupted", "duration", "tool-exited"]


@dataclass(frozen=True)
class LiveOptions:
    interfaces: tuple[str, ...] = ("any",)
    tool: str | None = None  # tcpdump or dumpcap; None: the first found on PATH
    duration: float | None = None  # seconds; None: until SIGINT/SIGTERM
    write: Path | None = None  # keep the pcap (one file per interface when there are several)
    bpf: str | None = None  # narrows the capture filter: tcp and (bpf)
    buffer_mib: int = 256  # the kernel's capture buffer: a second at 1 Gbit/s (twice the packets on lo)

    @property
    def capture_filter(self) -> str:
        return f"tcp and ({self.bpf})" if self.bpf else "tcp"


@dataclass
class LiveResult:
    tool: str
    interfaces: tuple[str, ...]
    capture_filter: str
    stopped: Stop
    seconds: float
    packets: dict[str, int] = field(default_factory=dict)  # per interface, as read by the analyzer
    stats: dict[str, ToolStats] = field(default_factory=dict)  # per interface, as the tool counted
    written: list[str] = field(default_factory=list)
    error: str | None = None  # the tool went away, or its stream broke
    backlog_peak: int = 0  # bytes: how far behind the analyzer was at most

    @property
    def dropped(self) -> int | None:
        counts = [s.dropped for s in self.stats.values()]
        return None if not counts or None in counts else sum(c for c in counts if c is not None)


class Capture:
    """One capture tool on one interface: its pcap stream parsed as it comes, its stderr kept."""

    def __init__(self, name: str, path: str, iface: str, options: LiveOptions, write: Path | None) -> None:
        self.name, self.path, self.iface = name, path, iface
        self.ready_marker = READY[name]
        self.parser = RecordParser(iface)
        self.said = b""
        self.eof = False  # its pcap stream ended (as analysed)
        self.err_eof = False
        self.broken = False  # its pcap stream could not be parsed on
        try:
            self.write: BinaryIO | None = write.open("wb") if write is not None else None
        except OSError as exc:
            raise LiveError(f"--write {write}: {exc.strerror or exc}") from None
        self.written = str(write) if write is not None else None
        argv = tool_argv(name, path, iface, options.capture_filter, options.buffer_mib)
        try:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            if self.write is not None:
                self.write.close()
            raise LiveError(f"cannot start {path}: {exc.strerror or exc}") from None
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.out, self.err = self.popen.stdout.fileno(), self.popen.stderr.fileno()
        for size in PIPE_SIZES:
            try:
                fcntl.fcntl(self.out, fcntl.F_SETPIPE_SZ, size)
                break
            except (OSError, AttributeError):
                continue
        self.reader: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.ready_marker in self.said

    def read_err(self) -> bool:
        chunk = os.read(self.err, 65536)
        self.said += chunk
        if not chunk:
            self.err_eof = True
        return bool(chunk)

    def start_reader(self, backlog: Backlog) -> None:
        def read() -> None:
            ended = False
            while not ended:
                buf, size = backlog.buffer(), 0
                with memoryview(buf) as view:
                    while size < READ:
                        try:
                            got = os.readv(self.out, [view[size:]])
                        except OSError:
                            got = 0
                        if not got:
                            ended = True
                            break
                        size += got
                        if not backlog.items:
                            break  # the analyzer waits for it; else it is behind: this buffer waits anyway, fill it
                if size >= READ // 4:
                    backlog.put(self, buf, size)
                else:  # a small read waits in a copy of its own size, the buffer is read into again
                    if size:
                        backlog.put(self, bytes(buf[:size]), size)
                    backlog.give_back(buf)
                    if not ended:
                        time.sleep(GATHER)  # let the pipe fill: fewer, larger chunks (less switching between threads)
            backlog.put(self, b"", 0)

        self.reader = threading.Thread(target=read, name=f"capture {self.iface}", daemon=True)
        self.reader.start()

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STOP_GRACE)
        if self.reader is not None:
            self.reader.join(STOP_GRACE)

    def close(self) -> None:
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        if self.write is not None:
            self.write.close()
            self.write = None


class Backlog:
    """What the reader threads have read and the analyzer has not yet analysed, in order, bounded in bytes; a byte
    on ``notify`` for each chunk put, so the analyzer's ``select`` wakes. A large read stays in its buffer of
    ``READ`` bytes, used again once analysed (``POOL`` of them kept): a fresh megabyte for every read, freed after
    it, cost the analyzer more than the analysis (the allocator hands such blocks back to the kernel, and every
    page of the next one faults in anew). A small read (a quiet link) is copied out, so a backlog of them holds
    what was read, not a megabyte each; while the analyzer is behind, a reader fills its buffer before it puts it
    (it would wait in the backlog anyway), so the memory held stays close to what was read."""

    def __init__(self, limit: int = BACKLOG) -> None:
        self.limit = limit
        self.items: deque[tuple[Capture, bytes | bytearray, int]] = deque()
        self.free: list[bytearray] = []
        self.size = 0  # bytes read and not yet analysed
        self.held = 0  # the memory that holds them (a large read: its whole buffer), which the limit bounds
        self.peak = 0
        self.closed = False
        self.cond = threading.Condition()
        self.notify, self._notify_w = os.pipe()
        os.set_blocking(self.notify, False)
        os.set_blocking(self._notify_w, False)

    def buffer(self) -> bytearray:
        """A buffer to read into: one given back, or a new one."""
        with self.cond:
            return self.free.pop() if self.free else bytearray(READ)

    def give_back(self, buf: bytearray) -> None:
        with self.cond:
            if len(self.free) < POOL:
                self.free.append(buf)

    def put(self, cap: Capture, buf: bytes | bytearray, size: int) -> None:
        """``size`` bytes read into ``buf`` (0: the stream ended); a buffer (bytearray) comes back to
        :meth:`give_back` once analysed."""
        with self.cond:
            while self.held > self.limit and not self.closed:
                self.cond.wait(WAKE)  # the analyzer is this far behind: let the tool wait
            self.items.append((cap, buf, size))
            self.size += size
            self.held += len(buf)
            self.peak = max(self.peak, self.size)
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway), or closed at the end
            os.write(self._notify_w, b".")

    def pop(self) -> tuple[Capture, bytes | bytearray, int] | None:
        with self.cond:
            if not self.items:
                return None
            item = self.items.popleft()
            self.size -= item[2]
            self.held -= len(item[1])
            self.cond.notify_all()
            return item

    def clear_notify(self) -> None:
        _drain(self.notify)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        os.close(self.notify)
        os.close(self._notify_w)


def write_paths(base: Path | None, interfaces: tuple[str, ...]) -> list[Path | None]:
    if base is None:
        return [None] * len(interfaces)
    if len(interfaces) == 1:
        return [base]
    suffix = base.suffix or ".pcap"
    return [base.with_name(f"{base.stem}-{iface}{suffix}") for iface in interfaces]


@contextlib.contextmanager
def _stop_signals() -> Iterator[tuple[int, list[bool]]]:
    """SIGINT and SIGTERM set a flag and wake the loop through a pipe (no exception in the middle of a packet)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    flag = [False]

    def handler(signum: int, frame: object) -> None:
        flag[0] = True

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        yield r, flag
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, old in saved.items():
            signal.signal(sig, old)
        os.close(r)
        os.close(w)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


class _Run:
    """The capture under way: the tools, the backlog between them and the analyzer, the result so far."""

    def __init__(self, analyzer: Analyzer, captures: list[Capture], result: LiveResult, wake: int,
                 stop: list[bool]) -> None:
        self.analyzer, self.captures, self.result = analyzer, captures, result
        self.wake, self.stop = wake, stop
        self.backlog = Backlog()
        self.stopping = False  # the tools were asked to stop: their end is expected

    def wait_ready(self) -> None:
        end = time.monotonic() + START_TIMEOUT
        captures = self.captures
        while not all(c.ready for c in captures) and not self.stop[0]:
            for cap in captures:
                if cap.popen.poll() is not None and not cap.ready:
                    while cap.read_err():
                        pass
                    raise LiveError(explain_failure(cap.name, cap.path, cap.iface,
                                                    cap.said.decode(errors="replace")))
            left = end - time.monotonic()
            if left <= 0:
                waiting = ", ".join(c.iface for c in captures if not c.ready)
                raise LiveError(f"{captures[0].name} did not start capturing on {waiting} within "
                                f"{START_TIMEOUT:g} s")
            fds = [c.err for c in captures if not c.ready and not c.err_eof] + [self.wake]
            readable, _, _ = select.select(fds, [], [], min(left, WAKE))
            for cap in captures:
                if cap.err in readable:
                    cap.read_err()
            if self.wake in readable:
                _drain(self.wake)
        for cap in captures:
            cap.start_reader(self.backlog)

    def analyse_one(self) -> bool:
        """Analyse one chunk of the backlog; False when there is none."""
        item = self.backlog.pop()
        if item is None:
            return False
        cap, buf, size = item
        if not size:
            cap.eof = True
            if not self.stopping and self.result.error is None:
                said = "; ".join(line.strip() for line in cap.said.decode(errors="replace").splitlines()
                                 if line.strip() and "listening on" not in line)
                self.result.error = f"{cap.name} on {cap.iface} stopped: {said or 'no message'}"
            return True
        if cap.write is not None:
            with memoryview(buf) as view:
                cap.write.write(view[:size])
        if not cap.broken:
            try:
                self.analyzer.point(cap.iface).feed(cap.parser, buf, size)
            except CaptureError as exc:
                cap.broken = True
                self.result.error = self.result.error or str(exc)
        if isinstance(buf, bytearray):
            self.backlog.give_back(buf)
        return True

    def wait(self, timeout: float) -> None:
        """Until the backlog has something, stderr speaks, a signal comes, or ``timeout``."""
        fds = [self.backlog.notify, self.wake] + [c.err for c in self.captures if not c.err_eof]
        readable, _, _ = select.select(fds, [], [], timeout)
        for cap in self.captures:
            if cap.err in readable:
                cap.read_err()
        if self.wake in readable:
            _drain(self.wake)
        if self.backlog.notify in readable:
            self.backlog.clear_notify()

    def loop(self, duration: float | None, began: float) -> Stop:
        end = began + duration if duration is not None else None
        while True:
            if self.stop[0]:
                return "interrupted"
            if end is not None and time.monotonic() >= end:
                return "duration"
            if self.result.error is not None:
                return "tool-exited"
            if self.analyse_one():
                continue
            left = WAKE if end is None else max(0.0, min(WAKE, end - time.monotonic()))
            self.wait(left)
            if not self.backlog.items:  # caught up: the clock moves with the wall clock
                self.analyzer.advance(time.time() - LAG)

    def analyse_for(self, seconds: float) -> None:
        """Go on analysing what comes for ``seconds`` (the packets the tools still hold back)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self.analyse_one():
                self.wait(max(0.0, min(WAKE, end - time.monotonic())))

    def finish(self, began: float) -> None:
        """Read on for ``FLUSH`` seconds, stop the tools (SIGINT: they write what they have and count), analyse the
        backlog to its end, end the open sessions."""
        if self.result.error is None:
            self.analyse_for(FLUSH)
        self.stopping = True
        for cap in self.captures:
            cap.stop()
        end = time.monotonic() + DRAIN_LIMIT
        while not all(c.eof for c in self.captures) and time.monotonic() < end:
            if not self.analyse_one():
                self.wait(WAKE)
        result = self.result
        for cap in self.captures:
            cap.kill()
            while not cap.err_eof and cap.read_err():
                pass
            result.stats[cap.iface] = parse_stats(cap.name, cap.said.decode(errors="replace"))
            result.packets[cap.iface] = cap.parser.packets
            if cap.written:
                result.written.append(cap.written)
        result.backlog_peak = self.backlog.peak
        result.seconds = time.monotonic() - began
        self.analyzer.close()


def run_live(options: Options, live: LiveOptions, on_event: Callable[[Event], None],
             on_ready: Callable[[str, tuple[str, ...], str], None] | None = None) -> tuple[LiveResult, Analyzer]:
    """Capture until SIGINT/SIGTERM, ``live.duration`` or the tool's end; every event to ``on_event`` as it
    happens, the sessions still open at the end included. Raises :class:`LiveError` when the capture cannot
    start."""
    name, path = find_tool(live.tool)
    analyzer = Analyzer(options, on_event, keep=False)
    captures: list[Capture] = []
    result = LiveResult(name, live.interfaces, live.capture_filter, "interrupted", 0.0)
    with _stop_signals() as (wake, stop):
        run: _Run | None = None
        try:
            for iface, write in zip(live.interfaces, write_paths(live.write, live.interfaces), strict=True):
                captures.append(Capture(name, path, iface, live, write))
            run = _Run(analyzer, captures, result, wake, stop)
            run.wait_ready()
            began = time.monotonic()
            if not stop[0]:
                if on_ready is not None:
                    on_ready(name, live.interfaces, live.capture_filter)
                result.stopped = run.loop(live.duration, began)
            run.finish(began)
            return result, analyzer
        finally:
            for cap in captures:
                cap.kill()
                cap.close()
            if run is not None:
                run.backlog.close()
