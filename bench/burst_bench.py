"""A burst of simultaneous control connections: N clients connect at once, log in as anonymous, NOOP, QUIT.

Compares ``ftpkit serve`` with vsftpd and pyftpdlib on 127.0.0.1 and writes its section of ``bench/results.md``
(between ``<!-- burst:begin -->`` and ``<!-- burst:end -->``). Run as root after ``./run test``:
``.venv/bin/python bench/burst_bench.py [--clients 500]``. Bounded: every client has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from results_file import write_section  # noqa: E402

from ftpkit.protocol.replies import Reply, ReplyReader  # noqa: E402
from realservers import real_server  # noqa: E402


async def one_client(port: int, deadline: float) -> str:
    """'ok', or what went wrong."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), deadline)
    except (OSError, TimeoutError) as exc:
        return f"connect: {type(exc).__name__}"
    replies = ReplyReader()
    pending: list[Reply] = []

    async def reply() -> Reply:
        while not pending:
            data = await reader.read(4096)
            if not data:
                raise ConnectionError("closed")
            pending.extend(e for e in replies.feed(data) if isinstance(e, Reply))
        return pending.pop(0)

    try:
        async with asyncio.timeout(deadline):
            greeting = await reply()
            if greeting.code != 220:
                return f"greeting {greeting.code}"
            writer.write(b"USER anonymous\r\n")
            got = await reply()
            if got.code == 331:
                writer.write(b"PASS x@\r\n")
                got = await reply()
            if got.code != 230:
                return f"login {got.code}"
            for line, want in ((b"NOOP", 200), (b"QUIT", 221)):
                writer.write(line + b"\r\n")
                got = await reply()
                if got.code != want:
                    return f"{line.decode()} {got.code}"
            return "ok"
    except (OSError, TimeoutError, ConnectionError) as exc:
        return f"session: {type(exc).__name__}"
    finally:
        writer.close()


async def burst(port: int, clients: int, deadline: float) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    results = await asyncio.gather(*(one_client(port, deadline) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    counts: dict[str, int] = {}
    for r in results:
        counts[r] = counts.get(r, 0) + 1
    return elapsed, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds each client may take")
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients + 256)), hard))
    rows = []
    root = Path(tempfile.mkdtemp(prefix="ftpkit-burst-", dir="/tmp"))
    root.chmod(0o755)
    settings = {
        "ftpkit": {"extra": ["--max-sessions", str(2 * args.clients), "--max-sessions-per-ip", str(2 * args.clients)]},
        "vsftpd": {"extra": ["max_clients=0", "max_per_ip=0"]},
        "pyftpdlib": {"extra": [f"handler.max_cons = {2 * args.clients}", "handler.max_cons_per_ip = 0"]},
    }
    for name, extra in settings.items():
        try:
            with real_server(name, root, **extra) as srv:
                elapsed, counts = asyncio.run(burst(srv.port, args.clients, args.deadline))
        except Exception as exc:  # a server that cannot start is reported, not hidden
            rows.append((name, None, {f"not run: {exc}": args.clients}))
            continue
        rows.append((name, elapsed, counts))
        print(f"{name}: {elapsed:.2f} s {counts}", flush=True)
    write_results(args, rows)
    ftpkit = next(r for r in rows if r[0] == "ftpkit")
    return 0 if ftpkit[2].get("ok", 0) == args.clients else 1


def write_results(args: argparse.Namespace, rows: list) -> None:  # type: ignore[type-arg]
    lines = [
        f"## A burst of {args.clients} simultaneous sessions",
        "",
        f"Measured by `python bench/burst_bench.py` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}). {args.clients} clients on one asyncio loop "
        "connect at once to 127.0.0.1 and each logs in as anonymous, sends NOOP and QUIT; session limits raised "
        "above the burst on every server.",
        "",
        "| server | all sessions done in | ok | failures |",
        "|---|---|---|---|",
    ]
    for name, elapsed, counts in rows:
        failures = ", ".join(f"{k}: {v}" for k, v in counts.items() if k != "ok") or "none"
        took = f"{elapsed:.2f} s" if elapsed is not None else "-"
        lines.append(f"| {name} | {took} | {counts.get('ok', 0)} | {failures} |")
    write_section("burst", lines)


if __name__ == "__main__":
    sys.exit(main())
