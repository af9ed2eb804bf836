"""Shared fixtures: an ftpkit server on loopback (in-process or as a real `ftpkit serve` process), and the rule
for real peers: present -> used; missing -> skipped with a reason, or a failure when CI=true."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ftpkit.server import FTPServer, validate
from ftpkit.server.session import StorageFactory
from s3server import bucket, s3_server, seaweedfs  # noqa: F401 - fixtures (a real S3 server: SeaweedFS)

ROOT = Path(__file__).resolve().parent.parent
PEERS_BIN = ROOT / ".peers" / "bin"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_peer(name: str) -> str:
    """The path of a peer program; skip (or fail in CI) when it is missing."""
    path = shutil.which(name) or (str(PEERS_BIN / name) if (PEERS_BIN / name).exists() else None)
    if path is None:
        message = f"peer program {name!r} is not installed (run ./run test as root on Debian to install it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Below the kernel's ephemeral range (32768-60999 by default): a client connection's source port is never one a
# test server is about to bind for passive mode (a 425 "no free passive port" once, when one took it).
_LOWEST, _HIGHEST = 20000, 32767
_next_range = [_LOWEST + (os.getpid() % 60) * 200]


def passive_range(size: int = 20) -> str:
    """A passive range of its own for each server a test starts, so tests never share ports."""
    if _next_range[0] + size - 1 > _HIGHEST:
        _next_range[0] = _LOWEST
    low = _next_range[0]
    _next_range[0] += size
    return f"{low}-{low + size - 1}"


@dataclass
class RunningServer:
    server: FTPServer
    loop: asyncio.AbstractEventLoop
    root: Path
    host: str

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ftp://{host}:{self.port}"


class ServerThread:
    """An in-process ftpkit server on its own event loop in a thread, stopped when the test ends."""

    def __init__(self) -> None:
        self.running: list[tuple[RunningServer, threading.Thread]] = []

    def start(self, root: Path, storage_factory: StorageFactory | None = None, **settings: Any) -> RunningServer:
        settings.setdefault("host", "127.0.0.1")
        settings.setdefault("port", 0)
        settings.setdefault("passive_ports", passive_range())
        settings.setdefault("login_fail_delay", 0.05)
        settings.setdefault("defender_file", str(Path(tempfile.mkdtemp(prefix="ftpkit-bans-")) / "bans.json"))
        cfg = validate({"root": str(root), **settings})
        loop = asyncio.new_event_loop()
        server = FTPServer(cfg, storage_factory=storage_factory)
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=main, daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("server did not start")
        running = RunningServer(server, loop, root, cfg.host)
        self.running.append((running, thread))
        return running

    def stop_all(self) -> None:
        for running, thread in self.running:
            fut = asyncio.run_coroutine_threadsafe(running.server.stop(grace=1), running.loop)
            fut.result(15)
            running.loop.call_soon_threadsafe(running.loop.stop)
            thread.join(10)
            running.loop.close()
        self.running.clear()


@pytest.fixture
def servers() -> Iterator[ServerThread]:
    st = ServerThread()
    yield st
    st.stop_all()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A served folder with a 1 MiB random file, a text file, Japanese UTF-8 names and a sub-folder."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "random.bin").write_bytes(os.urandom(1 << 20))
    (root / "hello.txt").write_bytes(b"hello\nworld\n")
    (root / "日本語ファイル.txt").write_bytes("こんにちは\n".encode())
    (root / "フォルダ").mkdir()
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    return root


@pytest.fixture
def server(servers: ServerThread, tree: Path) -> RunningServer:
    """A read-write user alice:secret and read-only anonymous on the tree."""
    return servers.start(tree, users=["alice:secret"])
