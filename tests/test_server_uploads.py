"""Uploads never lose data: an interrupted upload keeps the previous version and can be resumed, two uploads of
one name never mix, the server killed or stopped mid-upload loses nothing. Real clients (curl, ftpkit) resume."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningServer, ServerThread, require_peer
from ftpkit.server.uploads import partial_name, sweep_partials
from rawftp import Raw
from test_cli_serve import start_serve, stop

OLD = os.urandom(10 << 20)
NEW = os.urandom(12 << 20)
RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends a reset


def _open_stor(c: Raw, name: str, verb: str = "STOR") -> socket.socket:
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send(f"{verb} {name}")
    reply = c.reply()
    assert reply.code == 150, reply
    return data


def _arrived(c: Raw, at_least: int) -> None:
    """Until the server says (STAT during the transfer) that ``at_least`` bytes have arrived; bounded."""
    for _ in range(2000):
        reply = c.cmd("STAT")
        assert reply.code == 213, reply
        if int(reply.text.split(" bytes so far")[0].rsplit(" ", 1)[1]) >= at_least:
            return
    raise AssertionError(f"the server never received {at_least} bytes")


def _upload_then_reset(c: Raw, name: str, payload: bytes, cut: int) -> None:
    data = _open_stor(c, name)
    data.sendall(payload[:cut])
    _arrived(c, cut)  # a reset discards what the kernel holds unread: wait until the server has read it
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    data.close()
    reply = c.reply()
    assert reply.code in (426, 451), reply


def _login(server: RunningServer) -> Raw:
    c = Raw(server.host, server.port)
    c.login()
    assert c.cmd("TYPE I").code == 200
    return c


def _size(c: Raw, name: str) -> int:
    reply = c.cmd(f"SIZE {name}")
    assert reply.code == 213, reply
    return int(reply.text)


def test_reset_mid_upload_keeps_the_old_version_and_curl_resumes(server: RunningServer) -> None:
    target = server.root / "file.bin"
    target.write_bytes(OLD)
    c = _login(server)
    _upload_then_reset(c, "file.bin", NEW, 5 << 20)
    assert target.read_bytes() == OLD  # readers still see the whole previous version
    arrived = _size(c, "file.bin")  # an uploader is told how much to resume after
    assert 0 < arrived <= 5 << 20
    assert (server.root / partial_name("file.bin")).stat().st_size == arrived
    # a real client resumes: curl -C - asks SIZE and sends only the rest (APPE)
    local = server.root.parent / "new.bin"
    local.write_bytes(NEW)
    curl = require_peer("curl")
    done = subprocess.run([curl, "-sS", "-C", "-", "-T", str(local), f"ftp://alice:secret@127.0.0.1:{server.port}"
                           "/file.bin"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(NEW).digest()
    assert not (server.root / partial_name("file.bin")).exists()


def test_size_during_a_running_upload_says_what_arrived(server: RunningServer) -> None:
    """While an upload runs, SIZE of its name from another session of a user who may upload counts the bytes the
    server has written to the partial (what a resume would continue after); a read-only user sees the file itself,
    still the previous version. Once the upload is complete SIZE is the new file's."""
    target = server.root / "file.bin"
    target.write_bytes(OLD)
    cut = 3 << 20
    uploader, other = _login(server), _login(server)
    reader = Raw(server.host, server.port)
    reader.login("anonymous", "reader@example.org")
    data = _open_stor(uploader, "file.bin")
    data.sendall(NEW[:cut])
    _arrived(uploader, cut)
    seen = []
    for _ in range(2000):  # the server writes what has arrived from its pipe: poll until it is all on disk
        seen.append(_size(other, "file.bin"))
        assert seen[-1] <= cut, seen
        if seen[-1] == cut:
            break
    assert seen[-1] == cut, seen[-10:]
    assert seen == sorted(seen)  # it only grows
    assert (server.root / partial_name("file.bin")).stat().st_size == cut  # the partial holds exactly that
    assert _size(reader, "file.bin") == len(OLD) and target.read_bytes() == OLD
    data.sendall(NEW[cut:])
    data.close()
    assert uploader.reply().code == 226
    assert _size(other, "file.bin") == _size(reader, "file.bin") == len(NEW)
    assert not (server.root / partial_name("file.bin")).exists()
    for c in (uploader, other, reader):
        c.close()


def test_listings_never_show_partials(server: RunningServer) -> None:
    c = _login(server)
    _upload_then_reset(c, "hidden.bin", NEW, 1 << 20)
    assert (server.root / partial_name("hidden.bin")).exists()
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send("NLST")
    assert c.reply().code == 150
    names = b"".join(iter(lambda: data.recv(65536), b"")).decode().split("\r\n")
    data.close()
    assert c.reply().code == 226
    assert not any("ftpkit-partial" in n for n in names) and "hidden.bin" not in names


def test_rest_beyond_what_arrived_is_refused(server: RunningServer) -> None:
    c = _login(server)
    _upload_then_reset(c, "r.bin", NEW, 1 << 20)
    arrived = _size(c, "r.bin")
    assert c.cmd(f"REST {arrived + 10}").code == 350
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    reply = c.cmd("STOR r.bin")
    data.close()
    assert reply.code == 554 and "beyond" in reply.text


def test_two_uploads_of_one_name_at_once_never_mix(server: RunningServer) -> None:
    first, second = os.urandom(4 << 20), os.urandom(4 << 20)
    a, b = _login(server), _login(server)
    da, db = _open_stor(a, "same.bin"), _open_stor(b, "same.bin")
    for i in range(0, 4 << 20, 256 << 10):  # interleaved: each client sends a quarter MiB in turn
        da.sendall(first[i:i + (256 << 10)])
        db.sendall(second[i:i + (256 << 10)])
    da.close()
    assert a.reply().code == 226
    assert (server.root / "same.bin").read_bytes() == first
    db.close()
    assert b.reply().code == 226
    assert (server.root / "same.bin").read_bytes() == second
    assert [p.name for p in server.root.iterdir() if "ftpkit" in p.name] == []


def test_in_place_mode_writes_the_name_directly(servers: ServerThread, tree: Path) -> None:
    running = servers.start(tree, users=["alice:secret"], upload_mode="in-place")
    (tree / "file.bin").write_bytes(OLD)
    c = _login(running)
    _upload_then_reset(c, "file.bin", NEW, 1 << 20)
    got = (tree / "file.bin").read_bytes()
    assert got != OLD and NEW.startswith(got)
    assert not (tree / partial_name("file.bin")).exists()


def test_in_place_appe_appends_binary_data(servers: ServerThread, tree: Path) -> None:
    """APPE in place opens the file O_APPEND, which splice(2) refuses: the bytes still arrive, after the old ones."""
    running = servers.start(tree, users=["alice:secret"], upload_mode="in-place")
    (tree / "log.bin").write_bytes(OLD)
    c = _login(running)
    data = _open_stor(c, "log.bin", verb="APPE")
    data.sendall(NEW)
    data.close()
    assert c.reply().code == 226
    assert (tree / "log.bin").read_bytes() == OLD + NEW


def test_urgent_data_in_an_upload_fails_it_and_never_commits_a_short_file(servers: ServerThread, tree: Path) -> None:
    """TCP urgent data on a plain upload's data connection stops splice(2) as an end would: the upload gets 426 and
    the old file stays, rather than a truncated file and 226."""
    running = servers.start(tree, users=["alice:secret"])
    (tree / "file.bin").write_bytes(OLD)
    c = _login(running)
    data = _open_stor(c, "file.bin")
    data.sendall(NEW[:100000])
    data.send(b"!", socket.MSG_OOB)
    data.sendall(NEW[100000:200000])
    data.close()
    reply = c.reply()
    assert reply.code == 426 and "urgent" in reply.text, reply
    assert (tree / "file.bin").read_bytes() == OLD


def test_server_killed_mid_upload_then_resumed_after_restart(tree: Path, tmp_path: Path) -> None:
    (tree / "file.bin").write_bytes(OLD)
    local = tmp_path / "new.bin"
    local.write_bytes(NEW)
    proc, port, _ = start_serve([str(tree), "--user", "bob:pw"], tmp_path)
    try:
        c = Raw("127.0.0.1", port)
        c.login("bob", "pw")
        c.cmd("TYPE I")
        data = _open_stor(c, "file.bin")
        data.sendall(NEW[:6 << 20])
        _arrived(c, 6 << 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
        data.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tree / "file.bin").read_bytes() == OLD
    assert (tree / partial_name("file.bin")).stat().st_size > 0
    proc, port, _ = start_serve([str(tree), "--user", "bob:pw"], tmp_path)
    try:
        done = subprocess.run([sys.executable, "-m", "ftpkit", "put", "-c", "-v", str(local),
                               f"ftp://bob:pw@127.0.0.1:{port}/file.bin"], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert "REST" in done.stderr + done.stdout  # it continued, not restarted
        assert (tree / "file.bin").read_bytes() == NEW
    finally:
        assert stop(proc) == 0


def test_sigterm_mid_upload_lets_it_finish(tree: Path, tmp_path: Path) -> None:
    (tree / "file.bin").write_bytes(OLD)
    proc, port, _ = start_serve([str(tree), "--user", "bob:pw", "--shutdown-grace", "60"], tmp_path)
    try:
        c = Raw("127.0.0.1", port)
        c.login("bob", "pw")
        c.cmd("TYPE I")
        data = _open_stor(c, "file.bin")
        data.sendall(NEW[:4 << 20])
        _arrived(c, 4 << 20)
        proc.send_signal(signal.SIGTERM)
        data.sendall(NEW[4 << 20:])
        data.close()
        assert c.reply().code == 226
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tree / "file.bin").read_bytes() == NEW


def test_sweep_removes_only_stale_partials_nobody_writes(tmp_path: Path) -> None:
    stale, fresh, held = (tmp_path / partial_name(n) for n in ("a", "b", "c"))
    for p in (stale, fresh, held):
        p.write_bytes(b"x")
    os.utime(stale, (1, 1))
    os.utime(held, (1, 1))
    (tmp_path / "a").write_bytes(b"real")
    with held.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert sweep_partials(str(tmp_path), 3600) == 1
    assert not stale.exists() and fresh.exists() and held.exists() and (tmp_path / "a").exists()


def _until(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll the file system until ``condition`` holds; bounded in count and time."""
    deadline = time.monotonic() + limit
    for _ in range(int(limit / 0.02) + 1):
        if condition():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)  # polling real state, bounded by the deadline
    raise AssertionError(f"not within {limit:g} s: {what}")


def test_the_running_server_sweeps_stale_partials(servers: ServerThread, tree: Path) -> None:
    """The server's own sweeper removes partials older than partial_ttl at start and then every
    partial_sweep_interval; a recent one, which a client may still resume, stays."""
    early = tree / partial_name("early.bin")  # left by an upload interrupted before this server started
    early.write_bytes(NEW[:1000])
    os.utime(early, (time.time() - 3600, time.time() - 3600))
    running = servers.start(tree, users=["alice:secret"], partial_ttl=60, partial_sweep_interval=1)
    _until(lambda: not early.exists(), "the sweep at start removes the stale partial")
    c = _login(running)
    _upload_then_reset(c, "fresh.bin", NEW, 1 << 20)
    _upload_then_reset(c, "stale.bin", NEW, 1 << 20)
    fresh, stale = tree / partial_name("fresh.bin"), tree / partial_name("stale.bin")
    assert fresh.stat().st_size > 0 and stale.stat().st_size > 0
    os.utime(stale, (time.time() - 61, time.time() - 61))  # written last more than partial_ttl ago
    _until(lambda: not stale.exists(), "a later sweep removes the partial that became stale")
    assert fresh.exists() and _size(c, "fresh.bin") == fresh.stat().st_size  # still there to resume
    assert c.cmd("SIZE stale.bin").code == 550  # nothing left to resume (and no file of that name)
    c.close()


@pytest.mark.parametrize("long", [False, True])
def test_partial_names_fit(long: bool) -> None:
    name = ("名" * 80) if long else "x.bin"
    assert len(os.fsencode(partial_name(name))) <= 255 and partial_name(name).startswith(".")
