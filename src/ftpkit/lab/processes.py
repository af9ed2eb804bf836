"""Process supervision for the lab: starting programs inside a namespace, waiting until they are ready, stopping
them, and reaping whatever is still inside a namespace before it is deleted.

Every process is started by us with ``ip netns exec`` (which execs the command, so its PID is the program's own),
in a session of its own (a Ctrl-C on the terminal reaches only the lab, which then stops them in order), and is
stopped by that PID: SIGTERM for servers and clients, SIGINT for tcpdump (so it flushes), SIGKILL after a grace
period. Nothing is synchronised by a fixed sleep: readiness is a condition awaited until a deadline (a port accepts
a connection inside its namespace, a program printed what it prints when it is ready), and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PREFIX = "ftpkit-"  # every lab namespace's name starts with it; nothing is run in any other namespace
START_TIMEOUT = 10.0  # seconds for a server or a capture to become ready


class LabError(Exception):
    """Something in the lab could not be done; ``str()`` is the one line to show."""


def in_namespace(namespace: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``namespace`` (``ip netns exec`` execs it: the PID we get is the command's own)."""
    if not namespace.startswith(PREFIX):
        raise ValueError(f"not a lab namespace: {namespace!r}")
    return ["ip", "netns", "exec", namespace, *argv]


def netns_dir() -> Path:
    """Where ``ip netns add`` mounts named namespaces (``/run/netns``; ``/var/run/netns`` on older systems)."""
    for candidate in (Path("/run/netns"), Path("/var/run/netns")):
        if candidate.is_dir():
            return candidate
    return Path("/run/netns")


# --- the processes of one run ------------------------------------------------------------------------------------
@dataclass
class Started:
    name: str
    popen: subprocess.Popen[bytes]
    stop_signal: signal.Signals


class Processes:
    """Every process the lab starts, stopped by its PID in reverse order."""

    def __init__(self) -> None:
        self.started: list[Started] = []

    @property
    def pids(self) -> list[int]:
        return [s.popen.pid for s in self.started]

    def start(self, name: str, namespace: str, argv: list[str], *, stdout: IO[bytes] | int = subprocess.DEVNULL,
              stderr: IO[bytes] | int = subprocess.DEVNULL, stdin: IO[Any] | int = subprocess.DEVNULL,
              stop_signal: signal.Signals = signal.SIGTERM,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``env``: variables set for it on top of ours."""
        try:
            popen = subprocess.Popen(in_namespace(namespace, argv), stdin=stdin, stdout=stdout, stderr=stderr,
                                     start_new_session=True, env={**os.environ, **env} if env else None)
        except OSError as exc:
            raise LabError(f"cannot start {name}: {exc.strerror or exc}") from None
        self.started.append(Started(name, popen, stop_signal))
        return popen

    @staticmethod
    def stop(started: Started, grace: float = 3.0) -> None:
        popen = started.popen
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(started.stop_signal)
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait(5)
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()

    def stop_all(self) -> None:
        for started in reversed(self.started):
            self.stop(started)


# --- readiness ---------------------------------------------------------------------------------------------------
_WAIT_FOR_PORT = """\
import socket, sys, time
host, port, end = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), 0.5).close()
        sys.exit(0)
    except OSError:
        if time.monotonic() > end:
            sys.exit(1)
        time.sleep(0.02)
"""


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a log file, joined with `` | `` (empty when there is none)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def wait_for_port(procs: Processes, namespace: str, host: str, port: int, server: subprocess.Popen[bytes],
                  log: Path, timeout: float = START_TIMEOUT) -> None:
    """Until ``host:port`` accepts a connection inside ``namespace`` (polled by a helper in that namespace), while
    watching that the server did not exit."""
    waiter = procs.start("port check", namespace, [sys.executable, "-c", _WAIT_FOR_PORT, host, str(port),
                                                   f"{timeout:g}"])
    end = time.monotonic() + timeout + 5
    while time.monotonic() < end:
        try:
            code = waiter.wait(0.05)
        except subprocess.TimeoutExpired:
            if server.poll() is not None:
                break
            continue
        if code == 0:
            return
        break
    exited = server.poll()
    why = f"exited with code {exited}" if exited is not None else f"does not accept on {host}:{port}"
    raise LabError(f"the server {why}: {log_tail(log) or 'no output'}")


def wait_for_output(popen: subprocess.Popen[bytes], marker: bytes,
                    timeout: float = START_TIMEOUT) -> tuple[bool, str]:
    """Until ``popen`` wrote ``marker`` to its stderr (a pipe): ``(True, what it wrote)``; ``(False, what it
    wrote)`` when it exited or the deadline passed first."""
    assert popen.stderr is not None
    seen = b""
    end = time.monotonic() + timeout
    while marker not in seen:
        left = end - time.monotonic()
        if left <= 0 or popen.poll() is not None:
            return False, seen.decode(errors="replace")
        ready, _, _ = select.select([popen.stderr], [], [], left)
        if ready:
            chunk = os.read(popen.stderr.fileno(), 4096)
            if not chunk:
                continue
            seen += chunk
    return True, seen.decode(errors="replace")


# --- reaping what is left inside a namespace ---------------------------------------------------------------------
def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def pid_alive(pid: int) -> bool:
    return pid > 0 and not _gone(pid)


def namespace_pids(namespace: str) -> list[int]:
    """The processes inside ``namespace`` (what ``ip netns pids`` prints): those whose network namespace is the
    one mounted at its name. Processes that end while we look are skipped."""
    try:
        st = os.stat(netns_dir() / namespace)
    except OSError:
        return []
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
            found.append(int(entry))
    return found


def kill_namespace_processes(namespace: str, deadline: float = 3.0) -> list[int]:
    """SIGKILL every process still inside ``namespace`` (by PID) and wait for them; the PIDs killed."""
    killed: list[int] = []
    end = time.monotonic() + deadline
    for _ in range(5):  # processes may fork while we kill; a few rounds at most
        pids = [pid for pid in namespace_pids(namespace) if pid != os.getpid()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        for pid in pids:  # until each is gone (reaped if it is our child), polled until the deadline
            while time.monotonic() < end:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG) != (0, 0):
                        break
                if _gone(pid):
                    break
                time.sleep(0.01)
    return killed


# --- signals while the lab runs ----------------------------------------------------------------------------------
@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM (and SIGHUP) become KeyboardInterrupt while the lab runs, so ``finally`` cleans up."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    saved: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, interrupt)
    except ValueError:  # not the main thread: leave the handlers alone
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Cleanup is not cut short by a second Ctrl-C."""
    saved: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
