"""The client row of issue 11: ``ftpkit get`` / ``ftpkit put`` against curl and lftp, the same ``ftpkit serve``.

One ``ftpkit serve`` on 127.0.0.1 (anonymous, write allowed, warning-level log) serves a tmpfs directory (under
``/dev/shm``) holding one file of random bytes (1 GiB; ``--size-mib``). Each round runs every client once, the order
rotating from round to round: a download (``ftpkit get -o``, ``curl -o``, ``lftp -c get``) into the tmpfs, then an
upload of that copy (``ftpkit put``, ``curl -T``, ``lftp -c put``). Each figure is the whole command (process start
to exit) in MB/s (10^6 bytes), the median of ``--rounds`` rounds (default 5), with the CPU time the command used
(user + system: the client's own cost); every copy is checked by SHA-256.
``--startup`` also times ``ftpkit get --help`` (the process start a plain get pays: interpreter and imports) and sums
the imports of ``ftpkit get`` and ``put`` (``-X importtime``, top-level modules), medians of 11 runs, the client trees
taking turns.

The client and the server can run from other sources than this tree (``--client-src DIR``, ``--server-src DIR``: a
``src`` directory), so that a client change is measured against one fixed server, and before against after. The
sources are compiled to bytecode first and the commands run without ``PYTHONDONTWRITEBYTECODE``, as an installed
ftpkit does. Prints the figures and the load average; writes nothing else. Every
process it starts is stopped by its PID; the tmpfs directory is removed at the end.

    PYTHONPATH=src .venv/bin/python bench/client_bench.py [--rounds 5] [--size-mib 1024] [--startup]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from transfer_bench import client_commands, make_file, sha  # noqa: E402

TOOLS = ("ftpkit", "curl", "lftp")
COMMAND_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env_with(src: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed ftpkit has its bytecode (pip compiles it)
    return env


def compile_sources(*sources: Path) -> None:
    """Bytecode for the sources measured, as an installed package has: without it (PYTHONDONTWRITEBYTECODE), every
    ``ftpkit get`` compiles its modules again (about 60 ms here)."""
    for src in sources:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True, env=env_with(src),
                       stdout=subprocess.DEVNULL, timeout=300)


def wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"client_bench: ftpkit serve exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(100)
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("client_bench: ftpkit serve did not listen within 30 s")


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds of the whole command, and the CPU seconds (user + system) it used: the client's own cost, which the
    load of other work on the machine changes less than the time."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"client_bench: {argv[:4]} exit {out.returncode}: {out.stderr.strip()[-300:]}")
    return elapsed, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def startup(envs: dict[str, dict[str, str]], runs: int = 11) -> dict[str, tuple[float, float]]:
    """Per client tree: the medians of ``runs`` of ``ftpkit get --help`` (seconds, whole process) and of the imports
    of ``ftpkit get`` and ``put`` (seconds: the top-level modules' cumulative times in ``-X importtime``), the trees
    taking turns so that the machine's load falls on all alike."""
    code = "from ftpkit.cli import cli; cli.get_command(None, 'get'); cli.get_command(None, 'put')"
    walls: dict[str, list[float]] = {name: [] for name in envs}
    imports: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(runs):
        for name, env in envs.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ftpkit", "get", "--help"], check=True, stdout=subprocess.DEVNULL,
                           env=env, timeout=60)
            walls[name].append(time.perf_counter() - started)
            out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True, capture_output=True,
                                 text=True, env=env, timeout=60)
            imports[name].append(sum(int(fields[1]) for fields in (line.split("|") for line in out.stderr.splitlines())
                                     if len(fields) == 3 and fields[1].strip().isdigit()
                                     and not fields[2].startswith("  ")) / 1e6)
    return {name: (statistics.median(walls[name]), statistics.median(imports[name])) for name in envs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each figure is the median")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, of: " + ", ".join(TOOLS))
    parser.add_argument("--client-src", type=Path, default=REPO / "src", help="sources of the client (default: here)")
    parser.add_argument("--server-src", type=Path, default=REPO / "src", help="sources of the server (default: here)")
    parser.add_argument("--baseline-src", type=Path, help="also measure the client of these sources, as ftpkit-base")
    parser.add_argument("--startup", action="store_true", help="also time `ftpkit get --help` against `python -c pass`")
    args = parser.parse_args()
    tools = tuple(t for t in args.tools.split(",") if t)
    for tool in tools:
        if tool not in TOOLS:
            parser.error(f"--tools: {tool!r} is not one of {', '.join(TOOLS)}")
        if tool != "ftpkit" and shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    client_env = env_with(args.client_src)
    compile_sources(args.client_src, args.server_src, *([args.baseline_src] if args.baseline_src else []))
    envs = {tool: client_env for tool in tools}
    if args.baseline_src:
        tools += ("ftpkit-base",)
        envs["ftpkit-base"] = env_with(args.baseline_src)
    size = args.size_mib << 20
    print(f"load average before: {os.getloadavg()}", flush=True)
    if args.startup:
        started = {tool: envs[tool] for tool in ("ftpkit", "ftpkit-base") if tool in envs}
        for tool, (wall, imports) in startup(started).items():
            print(f"startup {tool}: `ftpkit get --help` {wall * 1e3:.0f} ms; imports of get and put (-X importtime) "
                  f"{imports * 1e3:.0f} ms", flush=True)
    work = Path(tempfile.mkdtemp(prefix="ftpkit-client-bench-", dir="/dev/shm"))
    proc = None
    try:
        served = work / "served"
        served.mkdir()
        home = work / "home"
        home.mkdir()
        local = work / "local.bin"
        digest = make_file(served / "big.bin", size)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ftpkit", "serve", str(served), "--host", "127.0.0.1", "--port", str(port),
             "--passive-ports", "52000-52200", "--anonymous", "--anonymous-write", "--log-level", "warning"],
            env=env_with(args.server_src), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_listening(port, proc, time.monotonic() + 30)
        url = f"ftp://anonymous:bench@127.0.0.1:{port}/"
        downs: dict[str, list[float]] = {t: [] for t in tools}
        ups: dict[str, list[float]] = {t: [] for t in tools}
        cpu_down: dict[str, list[float]] = {t: [] for t in tools}
        cpu_up: dict[str, list[float]] = {t: [] for t in tools}
        for round_ in range(args.rounds):
            shift = round_ % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                name = tool.removesuffix("-base")
                get, put = client_commands(name, url, "anonymous", "bench", local, "big.bin", home)
                env = {**envs[tool], "HOME": str(home)}
                elapsed, cpu = run_timed(get, env)
                downs[tool].append(size / elapsed / 1e6)
                cpu_down[tool].append(cpu)
                if sha(local) != digest:
                    raise SystemExit(f"client_bench: {tool}: the download differs")
                elapsed, cpu = run_timed(put, env)
                ups[tool].append(size / elapsed / 1e6)
                cpu_up[tool].append(cpu)
                uploaded = served / f"up-{tool.removesuffix('-base')}.bin"
                if sha(uploaded) != digest:
                    raise SystemExit(f"client_bench: {tool}: the upload differs")
                uploaded.unlink()
                local.unlink()
            print(f"round {round_ + 1}: " + ", ".join(f"{t} get {downs[t][-1]:.0f} put {ups[t][-1]:.0f}"
                                                     for t in tools), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"{args.size_mib} MiB, median of {args.rounds} rounds, MB/s (whole command):")
    print("| client | get MB/s | put MB/s | get CPU s | put CPU s |")
    print("|---|---|---|---|---|")
    for tool in tools:
        print(f"| {tool} | {statistics.median(downs[tool]):.0f} | {statistics.median(ups[tool]):.0f} | "
              f"{statistics.median(cpu_down[tool]):.2f} | {statistics.median(cpu_up[tool]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
