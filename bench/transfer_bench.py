"""Throughput over loopback: 1 GiB down and up.

1. clients against the same ftpkit server: ``ftpkit get/put``, curl and lftp (issue: ftpkit must not be the
   slowest of the three);
2. servers against the same client (curl): ``ftpkit serve``, vsftpd and pyftpdlib.

Writes its section of ``bench/results.md`` (between ``<!-- transfer:begin -->`` and ``<!-- transfer:end -->``).
Run as root on Debian after ``./run test`` has installed the peers: ``.venv/bin/python bench/transfer_bench.py``.
Everything runs on 127.0.0.1; every process it starts is stopped by its PID; the whole run is bounded.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from results_file import write_section  # noqa: E402

from realservers import real_server  # noqa: E402

TIMEOUT = 600


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for i in range(size >> 20):
            chunk = block[i % 251:] + block[:i % 251]  # not one repeated block: nothing compresses or dedups it
            fh.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    os.sync()  # start every measurement with no writeback pending from the one before
    started = time.perf_counter()
    subprocess.run(argv, check=True, timeout=TIMEOUT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.perf_counter() - started


def client_commands(tool: str, url: str, user: str, password: str, local: Path, remote: str, home: Path):  # type: ignore[no-untyped-def]
    base = url.rstrip("/")
    if tool == "ftpkit":
        py = [sys.executable, "-m", "ftpkit"]
        return ([*py, "get", f"{base}/{remote}", "-o", str(local)],
                [*py, "put", str(local), f"{base}/up-{tool}.bin"])
    if tool == "curl":
        return (["curl", "-sS", "-o", str(local), f"{base}/{remote}"],
                ["curl", "-sS", "-T", str(local), f"{base}/up-{tool}.bin"])
    host_port = re.sub(r"^ftp://[^@]*@", "", base)
    opening = f"set net:max-retries 1; set xfer:clobber on; open -u {user},{password} ftp://{host_port}"
    return (["lftp", "-c", f"{opening}; get {remote} -o {local}"],
            ["lftp", "-c", f"{opening}; put {local} -o up-{tool}.bin"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3, help="rounds; each figure is the best round")
    args = parser.parse_args()
    size = args.size_mib << 20
    for tool in ("curl", "lftp", "vsftpd"):
        if shutil.which(tool) is None:
            print(f"transfer_bench: {tool} is not installed (run ./run test as root first)", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="ftpkit-bench-", dir="/tmp"))
    work.chmod(0o755)
    rows_clients: list[tuple[str, float, float]] = []
    rows_servers: list[tuple[str, float, float]] = []
    try:
        served = work / "served"
        served.mkdir(mode=0o755)
        digest = make_file(served / "big.bin", size)
        local = work / "local.bin"
        home = work / "home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home)}
        # Runs are interleaved (every tool once per round) so that the page cache's writeback, which dominates
        # the noise of 1 GiB uploads, falls on all of them alike; each figure is the best round.
        with ExitStack() as stack:
            srv = stack.enter_context(real_server("ftpkit", served, writable=True))
            url = srv.url("", anonymous=False)
            tools = ("ftpkit", "curl", "lftp")
            downs: dict[str, list[float]] = {t: [] for t in tools}
            ups: dict[str, list[float]] = {t: [] for t in tools}
            for round_ in range(args.runs):
                for tool in tools[round_ % 3:] + tools[:round_ % 3]:  # each tool goes first once
                    get, put = client_commands(tool, url, srv.user, srv.password, local, "big.bin", home)
                    downs[tool].append(timed(get, env))
                    assert sha(local) == digest, f"{tool}: download differs"
                    ups[tool].append(timed(put, env))
                    assert sha(srv.root / f"up-{tool}.bin") == digest, f"{tool}: upload differs"
                    (srv.root / f"up-{tool}.bin").unlink()
            for tool in tools:
                rows_clients.append((tool, min(downs[tool]), min(ups[tool])))
                print(f"client {tool}: down {downs[tool]}, up {ups[tool]}", flush=True)
        names = ("ftpkit", "vsftpd", "pyftpdlib")
        sdowns: dict[str, list[float]] = {n: [] for n in names}
        sups: dict[str, list[float]] = {n: [] for n in names}
        for round_ in range(args.runs):
            for name in names[round_ % 3:] + names[:round_ % 3]:
                with real_server(name, served, writable=True) as srv:
                    url = srv.url("", anonymous=False)
                    get, put = client_commands("curl", url, srv.user, srv.password, local, "big.bin", home)
                    sdowns[name].append(timed(get, env))
                    assert sha(local) == digest, f"{name}: download differs"
                    sups[name].append(timed(put, env))
                    assert sha(srv.root / "up-curl.bin") == digest, f"{name}: upload differs"
                    (srv.root / "up-curl.bin").unlink()
        for name in names:
            rows_servers.append((name, min(sdowns[name]), min(sups[name])))
            print(f"server {name}: down {sdowns[name]}, up {sups[name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(args, rows_clients, rows_servers)
    slowest_down = max(rows_clients, key=lambda r: r[1])[0]
    slowest_up = max(rows_clients, key=lambda r: r[2])[0]
    ok = "ftpkit" not in (slowest_down, slowest_up)
    print("ftpkit is not the slowest client" if ok else "ftpkit is the slowest client in one direction")
    return 0 if ok else 1


def write_results(args: argparse.Namespace, clients: list, servers: list) -> None:  # type: ignore[type-arg]
    mib = args.size_mib

    def table(rows: list, label: str) -> list[str]:  # type: ignore[type-arg]
        ref_down, ref_up = rows[0][1], rows[0][2]
        out = [f"| {label} | download | MiB/s | up | MiB/s | vs ftpkit (down / up) |", "|---|---|---|---|---|---|"]
        for name, down, up in rows:
            out.append(f"| {name} | {down:.2f} s | {mib / down:.0f} | {up:.2f} s | {mib / up:.0f} | "
                       f"{down / ref_down:.2f}x / {up / ref_up:.2f}x |")
        return out

    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0].split()[1]
    lftp = subprocess.run(["lftp", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    section = [
        "## Transfers over loopback: 1 GiB down and up",
        "",
        f"Measured by `python bench/transfer_bench.py` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, curl {curl}, {lftp.strip()}). A {mib} MiB "
        f"file of random bytes; each figure is the best of {args.runs} interleaved rounds of a whole command (process "
        "start, login, transfer, quit); every transfer was checked byte-exact by SHA-256. Passive mode (EPSV), "
        "binary. The order of the tools rotates from round to round and every measurement starts after `sync`; "
        "uploads still vary by up to 2x from run to run with the page cache's writeback.",
        "",
        "Clients against the same server (`ftpkit serve`):",
        "",
        *table(clients, "client"),
        "",
        "Servers against the same client (curl):",
        "",
        *table(servers, "server"),
    ]
    write_section("transfer", section)


if __name__ == "__main__":
    sys.exit(main())
