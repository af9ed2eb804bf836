"""User-space instructions per session of each server, counted by valgrind's callgrind: a measure that does not move
with the load of a shared machine (the wall-time rows of server_bench.py vary by 20 % between rounds).

Each server runs under ``valgrind --tool=callgrind``; after a warm-up the counters are zeroed
(``callgrind_control -z PID``), then ``--sessions`` sessions of server_bench's session row (connect, anonymous
login, TYPE I, PASV, RETR 1 MiB compared with the file, QUIT; ``--concurrency`` at a time) run and the counters are
dumped (``callgrind_control -d PID``). The figure is the dump's instruction total over the sessions: the server's
own work in user space (interpreter, libraries, its threads), not the kernel's (send, sendfile, accept), which is the
same for every server. Servers: ftpkit as ``ftpkit serve`` runs it, ftpkit on uvloop's loop (set through asyncio's
loop policy by this script: not a setting of ftpkit; skipped when uvloop is not installed), pyftpdlib as
server_bench.py runs it. Every process started is stopped by its PID; every wait is bounded.

    .venv/bin/python bench/instructions_bench.py [--sessions 200] [--rounds 2] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import server_bench as sb  # noqa: E402
from results_file import write_section  # noqa: E402

START_TIMEOUT = 180.0  # seconds for a server under valgrind to listen
STOP_TIMEOUT = 60.0
UVLOOP_MAIN = ("import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
               "from ftpkit.cli import main; sys.argv[0] = 'ftpkit'; main()")


def argv_of(kind: str, root: Path, port: int, work: Path) -> list[str]:
    serve = ["serve", str(root), "--host", sb.HOST, "--port", str(port), "--passive-ports", "40000-44999",
             "--max-sessions", "20000", "--max-sessions-per-ip", "20000", "--max-prelogin-per-ip", "20000",
             "--passive-ports-per-ip", "65535", "--log-level", "warning", "--anonymous",
             "--idle-timeout", "600", "--login-timeout", "600"]
    if kind == "ftpkit":
        return [sys.executable, "-m", "ftpkit", *serve]
    if kind == "ftpkit-uvloop":
        return [sys.executable, "-c", UVLOOP_MAIN, *serve]
    script = work / "pyftpdlib_main.py"
    script.write_text(sb.PYFTPDLIB_MAIN)
    cfg = dict(user="bench", password="unused-" + os.urandom(6).hex(), root=str(root), low=45000, high=49999,
               host=sb.HOST, port=port, cap=20000, crypt=False)
    return [sys.executable, str(script), json.dumps(cfg)]


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:  # bounded by the deadline
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening")
        try:
            socket.create_connection((sb.HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not listen within {START_TIMEOUT:g} s")


def callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)


def measure(kind: str, root: Path, expected: bytes, sessions: int, concurrency: int, warmup: int) -> float:
    """Instructions per session of one server (a fresh process)."""
    work = Path(tempfile.mkdtemp(prefix=f"cg-{kind}-"))
    port = sb.free_port()
    env = sb.ftpkit_env()  # this tree's ftpkit, as server_bench.py runs it
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.%p",
                             "--dump-instr=no", *argv_of(kind, root, port, work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_listening(port, proc)

        async def run(total: int, at_once: int) -> dict[str, int]:
            _, counts = await sb.pool(total, at_once, lambda: sb.retr_session(port, expected), 120.0)
            return counts

        counts = asyncio.run(run(warmup, 4))
        if counts != {"ok": warmup}:
            raise RuntimeError(f"{kind}: warm-up sessions: {counts}")
        callgrind_control("-z", proc.pid)
        counts = asyncio.run(run(sessions, concurrency))
        callgrind_control("-d", proc.pid)
        if counts != {"ok": sessions}:
            raise RuntimeError(f"{kind}: sessions: {counts}")
        dumps = sorted(work.glob(f"cg.{proc.pid}.*"))
        if not dumps:
            raise RuntimeError(f"{kind}: callgrind wrote no dump")
        match = re.search(r"^summary:\s*(\d+)", dumps[-1].read_text(), re.M)
        if match is None:
            raise RuntimeError(f"{kind}: no summary in {dumps[-1]}")
        return int(match.group(1)) / sessions
    finally:
        proc.send_signal(signal.SIGINT if kind.startswith("ftpkit") else signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", default="ftpkit,ftpkit-uvloop,pyftpdlib",
                        help="comma-separated servers to measure (default: all three)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results.md")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"instructions_bench: {tool} is not installed (apt-get install valgrind)", file=sys.stderr)
            return 2
    known = ["ftpkit", "ftpkit-uvloop", "pyftpdlib"]
    kinds = [kind for kind in known if kind in args.servers.split(",")]
    if not kinds or set(args.servers.split(",")) - set(known):
        parser.error(f"--servers: a comma-separated list of {', '.join(known)}")
    if "ftpkit-uvloop" in kinds and importlib.util.find_spec("uvloop") is None:
        print("instructions_bench: uvloop is not installed (pip install uvloop): its row is left out", file=sys.stderr)
        kinds.remove("ftpkit-uvloop")
    root = Path(tempfile.mkdtemp(prefix="cg-root-"))
    expected = os.urandom(1 << 20)
    (root / "1m.bin").write_bytes(expected)
    got: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        for round_no in range(args.rounds):
            for kind in kinds[round_no % len(kinds):] + kinds[:round_no % len(kinds)]:
                value = measure(kind, root, expected, args.sessions, args.concurrency, args.warmup)
                got[kind].append(value)
                print(f"round {round_no + 1}: {kind:14} {value / 1e6:.3f} M instructions per session", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    if "pyftpdlib" not in got:
        return 0  # no anchor: the per-server figures above are the result
    if len(got) < len(known) and not args.no_write:
        print("instructions_bench: results.md is written only when all three servers are measured",
              file=sys.stderr)
        args.no_write = True
    anchor = min(got["pyftpdlib"])
    spread = max(max(v) / min(v) - 1 for v in got.values())
    lines = ["## User-space instructions per session (callgrind)", "",
             f"Measured by `python bench/instructions_bench.py --sessions {args.sessions} --rounds {args.rounds}` on "
             f"{time.strftime('%Y-%m-%d')} ({platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, {valgrind}, pyftpdlib {sb.pyftpdlib.__ver__}). Each server under "
             f"callgrind; after {args.warmup} warm-up sessions the counters are zeroed, then {args.sessions} sessions "
             f"of the session row (connect, anonymous login, TYPE I, PASV, RETR 1 MiB, QUIT; {args.concurrency} at "
             "a time) and a dump: the server's own instructions in user space (the kernel's share is not "
             "counted). Unlike the wall times, this does not move with the machine's load: the "
             f"rounds of one server differ by at most {spread:.2%}.", "",
             "| server | instructions per session (millions), each round | instructions / pyftpdlib's |",
             "|---|---|---|"]
    for kind in kinds:
        values = ", ".join(f"{v / 1e6:.3f}" for v in got[kind])
        lines.append(f"| {kind} | {values} | {min(got[kind]) / anchor:.2f}x |")
    print("\n".join(lines))
    if not args.no_write:
        write_section("instructions", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
