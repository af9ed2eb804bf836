"""Every transfer torn down every way: ABOR, QUIT, REIN, the data socket reset, the control socket reset, a client
that stops reading (zero window), a client that opens the data connection and sends nothing. Each gets its reply
at once (the control socket's timeout is far below every data timeout of the server) and leaves nothing behind:
file descriptors, tasks, threads, passive ports and counters are back to their baseline, checked by count."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningServer, ServerThread
from rawftp import Raw

RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"
POOLS = ("ftpkit-io", "ftpkit-hash", "asyncio_")  # the server's I/O and hash pools, asyncio's default executor


def _state(running: RunningServer) -> dict[str, int]:
    shared = running.server.shared

    async def snap() -> dict[str, int]:
        return {"tasks": len(asyncio.all_tasks()), "sessions": len(shared.sessions),
                "ports": len(shared.pool.in_use), "prelogin": sum(shared.prelogin.values())}

    state = asyncio.run_coroutine_threadsafe(snap(), running.loop).result(10)
    state["fds"] = len(_server_fds(running))
    names = [t.name for t in threading.enumerate()]
    # threads of the bounded pools (made as needed up to their sizes) apart from all the others, which must not grow
    state["pool_threads"] = sum(1 for n in names if n.startswith(POOLS))
    state["threads"] = len(names) - state["pool_threads"]
    return state


def _server_fds(running: RunningServer) -> list[str]:
    """What the server could leave open: sockets, pipes (spliced uploads) and files under its root. Other
    descriptors of this test process (another test's event loop, an import reading a module) are not the server's."""
    root = os.path.realpath(running.root)
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(("socket:", "pipe:")) or target == root or target.startswith(root + os.sep):
                found.append(target)
    return sorted(found)


def _settled(running: RunningServer, target: dict[str, int] | None = None) -> dict[str, int]:
    """The server's state once every session has ended and, given ``target``, once it is back there (a socket
    closes one loop iteration after its session ends). Bounded: a leak never gets back, and fails below."""
    for _ in range(500):
        state = _state(running)
        if state["sessions"] == 0 and state["prelogin"] == 0 and (target is None or _same(state, target)):
            return state
        threading.Event().wait(0.01)
    return state


def _same(state: dict[str, int], target: dict[str, int]) -> bool:
    """Nothing more than at ``target`` (which may itself still hold a socket about to close)."""
    return all(state[k] <= target[k] for k in ("tasks", "sessions", "ports", "prelogin", "fds", "threads"))


def _connect(running: RunningServer) -> Raw:
    c = Raw(running.host, running.port, timeout=10)  # every reply below must come well within this
    c.login()
    assert c.cmd("TYPE I").code == 200
    return c


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    sock.close()


def _passive(c: Raw, rcvbuf: int | None = None) -> socket.socket:
    host, port = c.pasv()
    data = socket.socket()
    if rcvbuf:
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    data.settimeout(10)
    data.connect((host, port))
    return data


def _start(c: Raw, verb: str, name: str, rcvbuf: int | None = None) -> socket.socket:
    data = _passive(c, rcvbuf)
    c.send(f"{verb} {name}")
    assert c.reply().code == 150
    return data


# Each scenario does its thing on a logged-in session and checks the replies; the session ends afterwards.
def abor_download(c: Raw) -> None:
    data = _start(c, "RETR", "big.bin")
    data.recv(65536)
    assert c.cmd("ABOR").code == 426 and c.reply().code == 226
    data.close()
    assert c.cmd("NOOP").code == 200


def abor_stalled_download(c: Raw) -> None:
    data = _start(c, "RETR", "big.bin", rcvbuf=4096)  # never read: the server's writes stall (zero window)
    assert c.cmd("ABOR").code == 426 and c.reply().code == 226
    data.close()


def quit_stalled_download(c: Raw) -> None:
    data = _start(c, "RETR", "big.bin", rcvbuf=4096)
    assert c.cmd("QUIT").code == 426 and c.reply().code == 221
    assert c.closed_by_server()
    data.close()


def reset_control_during_stalled_download(c: Raw) -> None:
    data = _start(c, "RETR", "big.bin", rcvbuf=4096)
    _reset(c.sock)
    data.close()


def reset_data_during_download(c: Raw) -> None:
    data = _start(c, "RETR", "big.bin")
    data.recv(65536)
    _reset(data)
    assert c.reply().code == 426
    assert c.cmd("NOOP").code == 200


def abor_silent_upload(c: Raw) -> None:
    data = _start(c, "STOR", "up.bin")  # connected, sends nothing
    assert c.cmd("ABOR").code == 426 and c.reply().code == 226
    data.close()


def quit_during_upload(c: Raw) -> None:
    data = _start(c, "STOR", "up.bin")
    data.sendall(b"x" * 100000)
    assert c.cmd("QUIT").code == 426 and c.reply().code == 221
    data.close()


def quit_after_upload_data_ended(c: Raw) -> None:
    """The client sent everything and closed, then QUIT at once: the upload is completed, not thrown away."""
    payload = os.urandom(3 << 20)
    data = _start(c, "STOR", "whole.bin")
    data.sendall(payload)
    data.shutdown(socket.SHUT_WR)
    # the server has seen the end of the data once the connection is closed from its side too
    assert data.recv(1) == b""
    data.close()
    c.send("QUIT")
    assert c.reply().code == 226 and c.reply().code == 221
    assert c.closed_by_server()


def reset_data_during_upload(c: Raw) -> None:
    data = _start(c, "STOR", "up.bin")
    data.sendall(b"y" * 100000)
    _reset(data)
    assert c.reply().code in (426, 451)
    assert c.cmd("NOOP").code == 200


def reset_control_during_upload(c: Raw) -> None:
    data = _start(c, "STOR", "up.bin")
    data.sendall(b"z" * 100000)
    _reset(c.sock)
    data.close()


def rein_after_transfer(c: Raw) -> None:
    data = _start(c, "RETR", "hello.txt")
    while data.recv(65536):
        pass
    data.close()
    assert c.reply().code == 226
    assert c.cmd("REIN").code == 220
    assert c.cmd("PWD").code == 530  # logged out
    c.login()
    assert c.cmd("PWD").code == 257


def passive_listener_never_used(c: Raw) -> None:
    c.pasv()
    assert c.cmd("QUIT").code == 221


SCENARIOS: dict[str, Callable[[Raw], None]] = {f.__name__: f for f in (
    abor_download, abor_stalled_download, quit_stalled_download, reset_control_during_stalled_download,
    reset_data_during_download, abor_silent_upload, quit_during_upload, quit_after_upload_data_ended,
    reset_data_during_upload, reset_control_during_upload, rein_after_transfer, passive_listener_never_used,
)}


@pytest.fixture(scope="module")
def teardown_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("teardown")
    with (root / "big.bin").open("wb") as fh:
        fh.truncate(512 << 20)
    (root / "hello.txt").write_bytes(b"hello\n")
    servers = ServerThread()
    running = servers.start(root, users=["alice:secret"], io_threads=2, hash_concurrency=1)
    # io 2, hash 1, and asyncio's default executor (min(32, cores + 4)), in case anything uses it
    running.thread_budget = 2 + 1 + min(32, (os.cpu_count() or 1) + 4)  # type: ignore[attr-defined]
    for scenario in SCENARIOS.values():  # warm up: every kind of worker thread exists from now on
        scenario(_connect(running))
    yield running
    servers.stop_all()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_torn_down_and_nothing_left_behind(teardown_server: RunningServer, name: str) -> None:
    before = _settled(teardown_server)
    for _ in range(3):
        c = _connect(teardown_server)
        SCENARIOS[name](c)
        c.sock.close()
    after = _settled(teardown_server, before)
    assert _same(after, before), f"{name}: {before} -> {after}; open now: {_server_fds(teardown_server)}"
    assert after["ports"] == 0
    # pool threads are made as needed up to the pools' sizes, never more; no other thread was left behind
    assert after["pool_threads"] <= teardown_server.thread_budget, after  # type: ignore[attr-defined]


def test_uploaded_whole_file_survived_quit(teardown_server: RunningServer) -> None:
    quit_after_upload_data_ended(_connect(teardown_server))
    assert (Path(teardown_server.root) / "whole.bin").stat().st_size == 3 << 20


def test_trickled_bytes_cannot_extend_the_login_deadline(servers: ServerThread, tree: Path) -> None:
    """Slowloris: a byte every 50 ms keeps the idle timer young, but the login deadline holds."""
    running = servers.start(tree, login_timeout=0.5, idle_timeout=60)
    sock = socket.create_connection((running.host, running.port), timeout=10)
    assert sock.recv(1024).startswith(b"220")
    got = b""
    for byte in b"USER anonymous" * 100:  # bounded: far longer than the deadline
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
        threading.Event().wait(0.05)  # the attack itself: the pace of the trickle
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            got += sock.recv(1024)
        sock.setblocking(True)
        if b"421" in got:
            break
    assert b"421 No login within 0.5 s" in got


def test_connections_not_logged_in_are_capped_per_address(servers: ServerThread, tree: Path) -> None:
    running = servers.start(tree, users=["alice:secret"], max_prelogin_per_ip=3)
    waiting = [Raw(running.host, running.port) for _ in range(3)]
    assert all(c.greeting.code == 220 for c in waiting)
    refused = Raw(running.host, running.port)
    assert refused.greeting.code == 421 and "not logged in" in refused.greeting.text
    other = Raw(running.host, running.port, source="127.0.0.2")  # another address is not affected
    assert other.greeting.code == 220
    waiting[0].login()  # a logged-in session no longer counts
    assert Raw(running.host, running.port).greeting.code == 220


def test_a_pipelined_flood_is_left_in_the_kernel_not_in_our_memory(servers: ServerThread, tree: Path) -> None:
    """A client that floods commands while a transfer runs and reads no reply: the server stops reading at 64
    waiting commands; the rest stays in the socket buffers, and other sessions are served meanwhile."""
    with (tree / "big.bin").open("wb") as fh:
        fh.truncate(256 << 20)
    running = servers.start(tree, users=["alice:secret"])
    c = _connect(running)
    data = _start(c, "RETR", "big.bin", rcvbuf=4096)  # a transfer that stalls: everything else must wait
    c.sock.setblocking(False)
    sent = 0
    flood = b"NOOP\r\n" * 10000
    for _ in range(1000):  # bounded: until the kernel's buffers are full
        try:
            sent += c.sock.send(flood)
        except BlockingIOError:
            break
    bound = 64 + 65536 // 6  # the limit plus what one read of 64 KiB can hold
    assert sent // 6 > 4 * bound

    async def waiting() -> int:
        return max(s.conv.waiting for s in running.server.shared.sessions)

    for _ in range(100):  # watch the server for a while: its queue never grows past the bound
        queued = asyncio.run_coroutine_threadsafe(waiting(), running.loop).result(10)
        assert queued <= bound, queued
        threading.Event().wait(0.01)
    other = _connect(running)
    assert other.cmd("PWD").code == 257
    _reset(c.sock)
    data.close()


def test_a_client_that_reads_no_reply_loses_its_socket(servers: ServerThread, tree: Path) -> None:
    """A client that sends commands and never reads a reply: once our replies fill its window and our buffer, the
    session ends after idle_timeout and the socket is closed two seconds later, though the client's kernel goes on
    acking zero-window probes (which would keep it open forever)."""
    running = servers.start(tree, users=["alice:secret"], idle_timeout=0.5)
    before = _settled(running)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((running.host, running.port))
    got = b""
    sock.sendall(b"USER alice\r\nPASS secret\r\n")
    for _ in range(100):  # bounded: the greeting, 331 and 230 come at once
        got += sock.recv(4096)
        if b"\r\n230" in got:
            break
    assert b"\r\n230" in got, got

    async def blocked() -> bool:
        return any(s.stream.write_pending() for s in running.server.shared.sessions)

    sock.setblocking(False)
    flood = b"NOOP\r\n" * 10000
    for _ in range(1000):  # bounded: until the replies we never read back up into the server's own buffer
        with contextlib.suppress(BlockingIOError):
            sock.send(flood)
        if asyncio.run_coroutine_threadsafe(blocked(), running.loop).result(10):
            break
        threading.Event().wait(0.01)
    assert asyncio.run_coroutine_threadsafe(blocked(), running.loop).result(10)
    mine = before["fds"] + 1  # the client's socket is in this process too
    for _ in range(1000):  # bounded: 0.5 s idle, the 2 s grace, then the socket is gone (10 s at most)
        state = _state(running)
        if state["sessions"] == 0 and state["fds"] <= mine:
            break
        threading.Event().wait(0.01)
    assert state["sessions"] == 0 and state["fds"] <= mine, (before, state, _server_fds(running))
    sock.close()
