"""Soak: mixed sessions against one ftpkit server for a long time, sampling its memory, file descriptors, threads
and asyncio tasks, to show them flat after warm-up (issue 12).

The server runs in this process, on its own event loop in a thread (so its tasks can be counted); the load runs in
a child process: ``--clients`` workers, each looping over one random kind of session: log in and LIST, RETR 1 MiB,
STOR 256 KiB then DELE, ABOR in the middle of a download, a reset data connection, a reset control connection,
garbage and over-long lines, a failed login, a client that stops reading. Bounded by ``--minutes``; everything on
127.0.0.1. Writes its section of ``bench/results.md`` (``<!-- soak:begin -->``).

    .venv/bin/python bench/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from results_file import write_section  # noqa: E402

from ftpkit import __version__  # noqa: E402
from ftpkit.protocol.hostport import parse_pasv  # noqa: E402
from ftpkit.server import FTPServer, validate  # noqa: E402

RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"


# --- the load (child process) ---------------------------------------------------------------------------------
class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""
        self.reply()

    def reply(self) -> str:
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                return line.decode("utf-8", "replace")

    def cmd(self, text: str | bytes) -> str:
        self.sock.sendall(text if isinstance(text, bytes) else text.encode() + b"\r\n")
        return self.reply()

    def login(self) -> None:
        self.cmd("USER alice")
        assert self.cmd("PASS secret").startswith("230")
        self.cmd("TYPE I")

    def data(self) -> socket.socket:
        hp = parse_pasv(self.cmd("PASV")[4:])
        return socket.create_connection((hp.host, hp.port), timeout=15)

    def close(self) -> None:
        self.sock.close()


def _drain(sock: socket.socket) -> int:
    n = 0
    while chunk := sock.recv(1 << 20):
        n += len(chunk)
    sock.close()
    return n


def session(port: int, kind: str, payload: bytes) -> None:
    c = Raw(port)
    try:
        if kind == "failed-login":
            c.cmd("USER alice")
            c.cmd("PASS wrong")
            return
        if kind == "garbage":
            c.cmd(b"\xff\xf4\x00GARBAGE \xc3\x28\r\n")
            c.cmd(b"X" * 5000 + b"\r\n")
            c.cmd("CWD ../../../../etc")
            return
        c.login()
        if kind == "list":
            d = c.data()
            c.cmd("LIST")
            _drain(d)
            c.reply()
        elif kind == "retr":
            d = c.data()
            c.cmd("RETR one.bin")
            assert _drain(d) == 1 << 20
            c.reply()
        elif kind == "stor":
            name = f"up-{os.getpid()}-{random.randrange(1 << 30)}.bin"
            d = c.data()
            c.cmd(f"STOR {name}")
            d.sendall(payload)
            d.close()
            c.reply()
            c.cmd(f"DELE {name}")
        elif kind == "abor":
            d = c.data()
            c.cmd("RETR big.bin")
            d.recv(65536)
            c.cmd("ABOR")
            c.reply()
            d.close()
        elif kind == "reset-data":
            d = c.data()
            c.cmd("RETR big.bin")
            d.recv(65536)
            d.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            d.close()
            c.reply()
        elif kind == "reset-control":
            d = c.data()
            c.cmd("RETR big.bin")
            d.recv(65536)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            d.close()
            return
        elif kind == "stalled-reader":
            d = socket.socket()
            d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hp = parse_pasv(c.cmd("PASV")[4:])
            d.settimeout(15)
            d.connect((hp.host, hp.port))
            c.cmd("RETR big.bin")
            c.cmd("ABOR")
            c.reply()
            d.close()
        c.cmd("QUIT")
    finally:
        c.close()


KINDS = ["list", "retr", "retr", "stor", "abor", "reset-data", "reset-control", "stalled-reader", "garbage",
         "failed-login"]


def load(port: int, clients: int, seconds: float) -> None:
    payload = os.urandom(256 << 10)
    end = time.monotonic() + seconds
    counts: dict[str, int] = {}
    errors: dict[str, int] = {}

    def worker() -> None:
        while time.monotonic() < end:
            kind = random.choice(KINDS)
            try:
                session(port, kind, payload)
                counts[kind] = counts.get(kind, 0) + 1
            except (OSError, AssertionError, ValueError) as exc:
                key = f"{kind}: {type(exc).__name__}"
                errors[key] = errors.get(key, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    print(f"SESSIONS {sum(counts.values())} {sorted(counts.items())}", flush=True)
    print(f"ERRORS {sorted(errors.items())}", flush=True)


# --- the server and the samples (this process) ----------------------------------------------------------------
def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _mean(values: list[int]) -> float:
    return sum(values) / max(1, len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    with tempfile.TemporaryDirectory(prefix="ftpkit-soak-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "one.bin").write_bytes(os.urandom(1 << 20))
        with (root / "big.bin").open("wb") as fh:
            fh.truncate(256 << 20)
        cfg = validate({"root": str(root), "port": 0, "users": ["alice:secret"], "passive_ports": "43000-43999",
                        "max_sessions_per_ip": 1000, "max_prelogin_per_ip": 1000, "passive_ports_per_ip": 1000,
                        "log_level": "error", "login_fail_delay": 0.01, "defender_file": str(Path(tmp) / "b.json")})
        loop = asyncio.new_event_loop()
        server = FTPServer(cfg)
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        ready.wait(10)

        async def tasks() -> int:
            return len(asyncio.all_tasks())

        seconds = args.minutes * 60
        child = subprocess.Popen([sys.executable, __file__, "--load", str(server.port), str(args.clients),
                                  str(seconds)], stdout=subprocess.PIPE, text=True)
        samples: list[tuple[float, float, int, int, int, int, int]] = []
        start = time.monotonic()
        while child.poll() is None and time.monotonic() - start < seconds + 120:
            t = time.monotonic() - start
            n_tasks = asyncio.run_coroutine_threadsafe(tasks(), loop).result(10)
            samples.append((t, rss_mib(), len(os.listdir("/proc/self/fd")), threading.active_count(), n_tasks,
                            len(server.shared.sessions), sys.getallocatedblocks()))
            print(f"soak: {t:6.0f} s  RSS {samples[-1][1]:6.1f} MiB  fds {samples[-1][2]:4d}  threads "
                  f"{samples[-1][3]:3d}  tasks {samples[-1][4]:4d}  sessions {samples[-1][5]:3d}  Python blocks "
                  f"{samples[-1][6]:,}", flush=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(args.every)
        out = child.communicate(timeout=120)[0]
        asyncio.run_coroutine_threadsafe(server.stop(grace=1), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    print(out)
    if args.no_write or len(samples) < 4:
        return
    warm = [s for s in samples if s[0] >= seconds * 0.2] or samples
    live = [s[6] for s in warm if s[5]]  # the last sample is taken after the load ended
    half = (live[:len(live) // 2] or live, live[len(live) // 2:] or live)
    lines = [
        "## Soak: mixed sessions for a long time",
        "",
        f"Measured by `python bench/soak.py --minutes {args.minutes:g} --clients {args.clients}` on "
        f"{time.strftime('%Y-%m-%d')} ({platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, ftpkit {__version__}). {args.clients} client threads loop over random "
        "sessions: LIST, RETR 1 MiB, STOR 256 KiB + DELE, ABOR mid-download, reset data connection, reset control "
        "connection, a reader that stalls then ABOR, garbage and over-long lines, failed logins. The server runs "
        "in the benchmark's process (its asyncio tasks counted), the load in a child process.",
        "",
        "| after | RSS MiB | fds | threads | tasks | sessions | Python blocks |",
        "|---|---|---|---|---|---|---|",
    ]
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        lines.append(f"| {s[0]:.0f} s | {s[1]:.1f} | {s[2]} | {s[3]} | {s[4]} | {s[5]} | {s[6]:,} |")
    lines += [
        "",
        f"- After warm-up (the first 20 %): RSS {min(s[1] for s in warm):.1f}-{max(s[1] for s in warm):.1f} MiB, "
        f"fds {min(s[2] for s in warm)}-{max(s[2] for s in warm)}, tasks {min(s[4] for s in warm)}-"
        f"{max(s[4] for s in warm)}, threads {min(s[3] for s in warm)}-{max(s[3] for s in warm)} (fds and tasks "
        "follow the sessions open at the moment of the sample).",
        f"- From the end of warm-up to the last sample: RSS {warm[0][1]:.1f} -> {warm[-1][1]:.1f} MiB "
        f"({warm[-1][1] - warm[0][1]:+.1f} MiB), threads {warm[0][3]} -> {warm[-1][3]}; Python's allocated blocks "
        f"(`sys.getallocatedblocks()`: objects alive, not what the allocator keeps) {min(s[6] for s in warm):,}-"
        f"{max(s[6] for s in warm):,}, mean {_mean(half[0]):,.0f} in the first half of those samples and "
        f"{_mean(half[1]):,.0f} in the second.",
        "- Load: " + " ".join(line for line in out.splitlines() if line.startswith(("SESSIONS", "ERRORS"))),
    ]
    write_section("soak", lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
