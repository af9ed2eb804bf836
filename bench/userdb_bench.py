"""Login lookups per second against PostgreSQL: asyncpg's pool against psycopg 3's AsyncConnectionPool, and
ftpkit's own user source on the chosen one.

A lookup is what every login costs the database: one primary-key SELECT of a user (the query of
``ftpkit.server.userdb``), over TCP to 127.0.0.1 with SCRAM authentication, through a pool of 8 connections.
Each run makes a fixed number of lookups from C concurrent tasks (1: one login at a time; 64: a login storm on one
node); the drivers take turns, 5 rounds, and the median is kept (rate and the client's CPU time, which a busy
machine disturbs less than the rate). A throwaway cluster is started (Debian's server binaries, as in the tests)
unless ``--url`` names one. Writes its section of ``bench/results.md`` (``<!-- userdb:begin -->``).

    .venv/bin/python bench/userdb_bench.py [--lookups 20000] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import asyncpg  # noqa: E402
import psycopg  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402
from results_file import write_section  # noqa: E402

from ftpkit.server import userdb  # noqa: E402

POOL = 8
ROUNDS = 5
USERS = 1000
Lookup = Callable[[str], Awaitable[object]]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


SERVER_PID: list[int] = []  # the postmaster, when this benchmark started the cluster


def server_cpu() -> float:
    """CPU seconds of the postmaster's children (the backends serving the pools), from /proc."""
    if not SERVER_PID:
        return 0.0
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == SERVER_PID[0]:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def run(lookup: Lookup, total: int, concurrency: int) -> tuple[float, float, float]:
    """(lookups per second, client and server CPU milliseconds per 1000 lookups)."""
    names = [f"user{i % USERS}" for i in range(total)]
    per_task = total // concurrency

    async def worker(k: int) -> None:
        for name in names[k * per_task:(k + 1) * per_task]:
            if await lookup(name) is None:
                raise RuntimeError(f"{name} not found")

    start, cpu0, server0 = time.perf_counter(), cpu(), server_cpu()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed, used, served = time.perf_counter() - start, cpu() - cpu0, server_cpu() - server0
    done = per_task * concurrency
    return done / elapsed, used / done * 1e6, served / done * 1e6


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def measure(url: str, total: int) -> list[tuple[str, int, float, float, float]]:
    await userdb.init_schema(url)
    admin = await asyncpg.connect(url)
    await admin.execute("DELETE FROM ftpkit_users")
    await admin.executemany(
        "INSERT INTO ftpkit_users (name, password_hash, home, write) VALUES ($1, $2, $3, true)",
        [(f"user{i}", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$" + "A" * 43, f"user{i}") for i in range(USERS)])
    await admin.close()
    rows = []

    apool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL)
    assert apool is not None

    async def asyncpg_lookup(name: str) -> object:
        return await apool.fetchrow(userdb.LOOKUP_SQL, name)

    async def keep_session(conn: asyncpg.Connection) -> None:
        pass

    npool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL, reset=keep_session)

    async def asyncpg_no_reset_lookup(name: str) -> object:
        return await npool.fetchrow(userdb.LOOKUP_SQL, name)

    # autocommit: no BEGIN/COMMIT around the SELECT (asyncpg sends none either)
    ppool = AsyncConnectionPool(url, min_size=POOL, max_size=POOL, open=False, kwargs={"autocommit": True})
    await ppool.open(wait=True)
    psql = userdb.LOOKUP_SQL.replace("$1", "%s")

    async def psycopg_lookup(name: str) -> object:
        async with ppool.connection() as conn:
            cur = await conn.execute(psql, (name,))
            return await cur.fetchone()

    source = userdb.PostgresUsers(url, Path("/"), pool_size=POOL)
    await source.open()

    drivers: tuple[tuple[str, Lookup], ...] = (
        ("asyncpg pool", asyncpg_lookup), ("asyncpg pool, no reset query", asyncpg_no_reset_lookup),
        ("psycopg 3 AsyncConnectionPool", psycopg_lookup), ("ftpkit PostgresUsers.lookup (asyncpg)", source.lookup))
    for concurrency in (1, 64):
        for _, fn in drivers:
            await run(fn, min(total, 1000), concurrency)  # warm: connections open, statements prepared
        samples: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in drivers}
        for _ in range(ROUNDS):  # interleaved, so a burst of load elsewhere on the machine hits every driver
            for label, fn in drivers:
                samples[label].append(await run(fn, total, concurrency))
        for label, _ in drivers:
            rate, client_ms, server_ms = (median([sample[i] for sample in samples[label]]) for i in range(3))
            rows.append((label, concurrency, rate, client_ms, server_ms))
            print(f"{label:40} c={concurrency:3}: {rate:8.0f} lookups/s, CPU per 1000: client {client_ms:.0f} ms, "
                  f"server {server_ms:.0f} ms", flush=True)
    await apool.close()
    await npool.close()
    await ppool.close()
    await source.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--url", help="an existing database (default: a throwaway cluster)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/results.md")
    args = parser.parse_args()
    cluster = None
    url = args.url
    version = ""
    if url is None:
        from pgcluster import PgCluster

        cluster = PgCluster.create().start()
        SERVER_PID.append(cluster.pid() or 0)
        url = cluster.url()
        version = cluster.psql("SHOW server_version").strip()
    try:
        rows = asyncio.run(measure(url, args.lookups))
    finally:
        if cluster is not None:
            cluster.stop()
            cluster.remove()
    if args.no_write:
        return
    lines = [
        "## Login lookups per second against PostgreSQL: asyncpg or psycopg 3",
        "",
        f"Measured by `python bench/userdb_bench.py` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} cores shared by client and server, Python {platform.python_version()}, PostgreSQL "
        f"{version or 'given by --url'}, asyncpg {asyncpg.__version__}, psycopg {psycopg.__version__}). One lookup is "
        f"ftpkit's primary-key SELECT of a user over TCP to 127.0.0.1 (SCRAM), through a pool of {POOL} "
        f"connections; {args.lookups} lookups per run from C concurrent tasks, drivers in turn, median of {ROUNDS} "
        f"rounds. psycopg runs in autocommit (no BEGIN/COMMIT around the SELECT; asyncpg sends none either). asyncpg's "
        f"pool runs a reset query (`RESET ALL; UNLISTEN *; ...`) whenever a connection goes back, unless given "
        f"`reset=`; ftpkit's source gives a no-op (a lookup changes no session state) and has its query timeout on.",
        "",
        "| driver | C | lookups/s | CPU per 1000 lookups: client | server (backends) |",
        "|---|---|---|---|---|",
        *[f"| {label} | {c} | {rate:,.0f} | {client:.0f} ms | {server:.0f} ms |"
          for label, c, rate, client, server in rows],
    ]
    write_section("userdb", lines)


if __name__ == "__main__":
    main()
