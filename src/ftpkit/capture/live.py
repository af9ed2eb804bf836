"""A live capture: tcpdump (or dumpcap) on one or more interfaces, its pcap stream read from a pipe as it comes
and fed to the same :class:`~ftpkit.capture.engine.Analyzer` that reads files, whose events are reported at once.

The capture filter is ``tcp`` (with ``--filter``: ``tcp and (EXPR)``). A BPF program is fixed when the capture
starts and keeps no state, so it cannot follow a control connection: the port of a data connection is known only
once PORT or 227 has been read, and changing the filter then would mean restarting the capture and losing packets.
``tcp port 21 or (tcp and portrange 1024-65535)`` would pass nearly the same packets (every connection has an
ephemeral port on one side) while missing a server that announces a port below 1024. So all TCP is captured and
the analyzer drops what is not FTP at its first packet (the flow table's fast path).

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
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from ftpkit.capture.analyzer import Options
from ftpkit.capture.engine import Analyzer
from ftpkit.capture.events import Event
from ftpkit.capture.records import CaptureError, RecordParser

TOOLS = ("tcpdump", "dumpcap")
READY = {"tcpdump": b"listening on", "dumpcap": b"File: "}
START_TIMEOUT = 10.0  # seconds for a capture tool to start capturing
STOP_GRACE = 5.0  # seconds a tool has to flush and exit after SIGINT
WAKE = 0.25  # seconds between two looks at the clock when nothing comes
LAG = 0.2  # seconds the wall clock is held back (packets still on their way through the pipe)
READ = 1 << 20
PIPE_SIZE = 1 << 20  # the pipe from the tool holds this much while the analyzer is busy

Stop = Literal["interrupted", "duration", "tool-exited"]


class LiveError(Exception):
    """The capture cannot run: ``str()`` is the one line to show (exit code 2)."""


@dataclass(frozen=True)
class LiveOptions:
    interfaces: tuple[str, ...] = ("any",)
    tool: str | None = None  # tcpdump or dumpcap; None: the first found on PATH
    duration: float | None = None  # seconds; None: until SIGINT/SIGTERM
    write: Path | None = None  # keep the pcap (one file per interface when there are several)
    bpf: str | None = None  # narrows the capture filter: tcp and (bpf)
    buffer_mib: int = 32  # the kernel's capture buffer

    @property
    def capture_filter(self) -> str:
        return f"tcp and ({self.bpf})" if self.bpf else "tcp"


@dataclass
class ToolStats:
    captured: int | None = None
    received: int | None = None
    dropped: int | None = None  # dropped by the kernel: the analyzer (or the tool) did not keep up


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

    @property
    def dropped(self) -> int | None:
        counts = [s.dropped for s in self.stats.values()]
        return None if not counts or None in counts else sum(c for c in counts if c is not None)


def find_tool(preferred: str | None = None) -> tuple[str, str]:
    """(name, path) of the capture tool; :class:`LiveError` naming what is missing."""
    for name in (preferred,) if preferred else TOOLS:
        path = shutil.which(name)
        if path:
            return name, path
    if preferred:
        raise LiveError(f"--live needs {preferred} on PATH, and it is not there (on Debian: apt install "
                        f"{'tcpdump' if preferred == 'tcpdump' else 'wireshark-common'})")
    raise LiveError("--live needs tcpdump or dumpcap on PATH, and neither is there (on Debian: apt install tcpdump)")


def tool_argv(name: str, path: str, iface: str, bpf: str, buffer_mib: int) -> list[str]:
    if name == "tcpdump":  # -U: every packet is written at once; -w -: pcap on stdout
        return [path, "-i", iface, "-n", "-s", "0", "-U", "--immediate-mode", "-B", str(buffer_mib * 1024),
                "-w", "-", bpf]
    return [path, "-i", iface, "-q", "-s", "0", "-B", str(buffer_mib), "-P", "-w", "-", "-f", bpf]


def explain_failure(name: str, path: str, iface: str, said: str) -> str:
    """One line for a capture tool that would not start."""
    lines = [line.strip() for line in said.splitlines() if line.strip() and not line.startswith("Capturing on")]
    text = "; ".join(lines) or "no message"
    low = text.lower()
    if "permission" in low or "not permitted" in low:
        return (f"capturing on {iface} needs the CAP_NET_RAW and CAP_NET_ADMIN capabilities: run it as root, or give "
                f"them to {name} (setcap cap_net_raw,cap_net_admin=eip {path}); {name} said: {text}")
    if "no such device" in low or "doesn't exist" in low or "no such interface" in low:
        return f"-i {iface}: there is no such interface here; {name} said: {text}"
    if "syntax error" in low or "can't parse filter" in low or "filter expression" in low:
        return f"--filter: {name} cannot compile the capture filter; {name} said: {text}"
    return f"{name} on {iface} stopped at once; it said: {text}"


def parse_stats(name: str, said: str) -> ToolStats:
    stats = ToolStats()
    if name == "tcpdump":
        for key, attr in (("captured", "captured"), ("received by filter", "received"),
                          ("dropped by kernel", "dropped")):
            m = re.search(rf"(\d+) packets? {key}", said)
            if m:
                setattr(stats, attr, int(m.group(1)))
    else:
        m = re.search(r"received/dropped on interface '[^']*': (\d+)/(\d+)", said)
        if m:
            stats.received, stats.dropped = int(m.group(1)), int(m.group(2))
        m = re.search(r"Packets captured: (\d+)", said)
        if m:
            stats.captured = int(m.group(1))
    return stats


class Capture:
    """One capture tool on one interface: its pcap stream parsed as it comes, its stderr kept."""

    def __init__(self, name: str, path: str, iface: str, options: LiveOptions, write: Path | None) -> None:
        self.name, self.path, self.iface = name, path, iface
        self.ready_marker = READY[name]
        self.parser = RecordParser(iface)
        self.said = b""
        self.eof = False  # stdout ended
        self.err_eof = False
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
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self.out, fcntl.F_SETPIPE_SZ, PIPE_SIZE)

    @property
    def ready(self) -> bool:
        return self.ready_marker in self.said

    def read_err(self) -> bool:
        chunk = os.read(self.err, 65536)
        self.said += chunk
        if not chunk:
            self.err_eof = True
        return bool(chunk)

    def fds(self) -> list[int]:
        """What is still to be read from the tool."""
        return ([] if self.eof else [self.out]) + ([] if self.err_eof else [self.err])

    def read_out(self) -> bytes:
        data = os.read(self.out, READ)
        if not data:
            self.eof = True
        elif self.write is not None:
            self.write.write(data)
        return data

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

    def close(self) -> None:
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        if self.write is not None:
            self.write.close()
            self.write = None


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
        try:
            for iface, write in zip(live.interfaces, write_paths(live.write, live.interfaces), strict=True):
                captures.append(Capture(name, path, iface, live, write))
            _wait_ready(captures, wake, stop)
            if stop[0]:
                return _finish(result, captures, analyzer, time.monotonic())
            if on_ready is not None:
                on_ready(name, live.interfaces, live.capture_filter)
            began = time.monotonic()
            result.stopped = _loop(captures, analyzer, wake, stop, live.duration, began, result)
            return _finish(result, captures, analyzer, began)
        finally:
            for cap in captures:
                cap.kill()
                cap.close()


def _wait_ready(captures: list[Capture], wake: int, stop: list[bool]) -> None:
    end = time.monotonic() + START_TIMEOUT
    while not all(c.ready for c in captures) and not stop[0]:
        for cap in captures:
            if cap.popen.poll() is not None and not cap.ready:
                while cap.read_err():
                    pass
                raise LiveError(explain_failure(cap.name, cap.path, cap.iface, cap.said.decode(errors="replace")))
        left = end - time.monotonic()
        if left <= 0:
            waiting = ", ".join(c.iface for c in captures if not c.ready)
            raise LiveError(f"{captures[0].name} did not start capturing on {waiting} within {START_TIMEOUT:g} s")
        fds = [c.err for c in captures if not c.ready and not c.err_eof] + [wake]
        readable, _, _ = select.select(fds, [], [], min(left, WAKE))
        for cap in captures:
            if cap.err in readable:
                cap.read_err()
        if wake in readable:
            _drain(wake)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def _feed(cap: Capture, analyzer: Analyzer, data: bytes) -> None:
    point = analyzer.point(cap.iface)
    point.run(cap.parser.feed(data))


def _loop(captures: list[Capture], analyzer: Analyzer, wake: int, stop: list[bool], duration: float | None,
          began: float, result: LiveResult) -> Stop:
    end = began + duration if duration is not None else None
    by_fd = {c.out: c for c in captures} | {c.err: c for c in captures}
    while True:
        if stop[0]:
            return "interrupted"
        now = time.monotonic()
        if end is not None and now >= end:
            return "duration"
        timeout = WAKE if end is None else max(0.0, min(WAKE, end - now))
        fds = [fd for c in captures for fd in c.fds()] + [wake]
        readable, _, _ = select.select(fds, [], [], timeout)
        busy = False
        for fd in readable:
            if fd == wake:
                _drain(wake)
                continue
            cap = by_fd[fd]
            if fd == cap.err:
                cap.read_err()
                continue
            data = cap.read_out()
            if not data:
                result.error = f"{cap.name} on {cap.iface} stopped: " + (
                    "; ".join(line.strip() for line in cap.said.decode(errors="replace").splitlines()
                              if line.strip() and "listening on" not in line) or "no message")
                return "tool-exited"
            busy = True
            try:
                _feed(cap, analyzer, data)
            except CaptureError as exc:
                result.error = str(exc)
                return "tool-exited"
        if not busy:  # caught up: the clock moves with the wall clock
            analyzer.advance(time.time() - LAG)


def _finish(result: LiveResult, captures: list[Capture], analyzer: Analyzer, began: float) -> tuple[LiveResult,
                                                                                                     Analyzer]:
    """Stop the tools (SIGINT: they flush and count), read what they still send, end the open sessions."""
    for cap in captures:
        cap.stop()
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:
        fds = [fd for c in captures for fd in c.fds()]
        if not fds:
            break
        readable, _, _ = select.select(fds, [], [], max(0.0, min(WAKE, deadline - time.monotonic())))
        for cap in captures:
            if cap.err in readable and not cap.err_eof:
                cap.read_err()
            if cap.out in readable and not cap.eof:
                data = cap.read_out()
                if data and result.error is None:
                    try:
                        _feed(cap, analyzer, data)
                    except CaptureError as exc:
                        result.error = str(exc)
    for cap in captures:
        cap.kill()
        result.stats[cap.iface] = parse_stats(cap.name, cap.said.decode(errors="replace"))
        result.packets[cap.iface] = cap.parser.packets
        if cap.written:
            result.written.append(cap.written)
    result.seconds = time.monotonic() - began
    analyzer.close()
    return result, analyzer
