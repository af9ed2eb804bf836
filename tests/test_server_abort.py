"""ABOR of a running download sent as RFC 959 §4.1.3 describes (Telnet IP, then the Synch: IAC DM with the DM as
TCP urgent data), by raw sockets in each shape real clients use and by the real clients themselves (tnftp,
inetutils-ftp, ncftp; lftp sends the "lftp" shape): the transfer gets 426 and the ABOR 226 as soon as the abort
arrives (the data idle timeout is an hour here, so a 426 can only come from the abort)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import RunningServer, require_peer
from rawftp import Raw

BIG = 64 << 30  # a sparse file: no transfer of it ends while a test aborts it
TIMEOUT = 60


@pytest.fixture
def big_server(servers, tmp_path: Path) -> RunningServer:
    root = tmp_path / "root"
    root.mkdir()
    with open(root / "big.bin", "wb") as fh:
        fh.truncate(BIG)
    return servers.start(root, users=["alice:secret"], data_idle_timeout=3600)


def _transfer_bytes(server: RunningServer) -> int:
    """Bytes moved so far by the transfers running in the server (asked on the server's own loop)."""
    async def probe() -> int:
        return sum(s.transfer.bytes for s in server.server.shared.sessions if s.transfer is not None)
    return asyncio.run_coroutine_threadsafe(probe(), server.loop).result(10)


def _wait_for_a_running_transfer(server: RunningServer, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + TIMEOUT
    while _transfer_bytes(server) == 0:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the client exited ({proc.returncode}) before its transfer started")
        if time.monotonic() > deadline:
            raise AssertionError("no transfer started")
        time.sleep(0.02)  # polling the server's state, bounded by the deadline


def _drain(sock: socket.socket, counter: list[int]) -> None:
    """Read a data connection to its end, as a client that keeps reading until the server closes it."""
    with sock:
        while chunk := sock.recv(1 << 20):
            counter[0] += len(chunk)


# Each shape: what goes in line before the urgent send, the urgent send (its last byte is the urgent one), and
# what follows in line.
SHAPES = {
    "bsd": (b"", b"\xff\xf4\xff", b"\xf2ABOR\r\n"),  # tnftp and inetutils-ftp
    "ncftp": (b"\xff\xf4", b"\xff\xf2", b"ABOR\r\n"),
    "lftp": (b"\xff\xf4\xff", b"\xf2", b"ABOR\r\n"),  # only the DM urgent
    "in-line": (b"\xff\xf4\xff\xf2", b"", b"ABOR\r\n"),  # no urgent data at all
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_abort_with_telnet_synch_stops_a_running_download(big_server, shape, caplog):
    before, urgent, after = SHAPES[shape]
    c = Raw(big_server.host, big_server.port, timeout=TIMEOUT)
    c.login()
    c.cmd("TYPE I")
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=TIMEOUT)
    received = [0]
    reader = threading.Thread(target=_drain, args=(data, received))
    reader.start()
    with caplog.at_level(logging.DEBUG, logger="ftpkit.server"):
        assert c.cmd("RETR big.bin").code == 150
        _wait_for_a_running_transfer(big_server)
        if before:
            c.sock.sendall(before)
        if urgent:
            assert c.sock.send(urgent, socket.MSG_OOB) == len(urgent)
        c.sock.sendall(after)
        first, second = c.reply(), c.reply()
        reader.join(TIMEOUT)
    assert (first.code, second.code) == (426, 226), (first, second)
    assert second.text == "ABOR successful."
    assert not reader.is_alive() and 0 < received[0] < BIG  # the server closed the data connection
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("--> ABOR") for m in messages), messages
    assert any("RETR /big.bin" in m and m.endswith("failed (aborted)") for m in messages), messages
    assert c.cmd("NOOP").code == 200  # nothing of the Synch is left over in the session


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(home), LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="dumb")
    return env


def _interrupt_download(server: RunningServer, args: list[str], script: list[str] | None, env: dict[str, str],
                        caplog: pytest.LogCaptureFixture, data_on_stdout: bool = False) -> str:
    """Start a client's download, SIGINT it once the server moves data (the client's abort), let it quit;
    return everything the client printed (its stderr only when the data goes to its stdout)."""
    with caplog.at_level(logging.DEBUG, logger="ftpkit.server"):
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, env=env,
                                stdout=subprocess.DEVNULL if data_on_stdout else subprocess.PIPE,
                                stderr=subprocess.PIPE if data_on_stdout else subprocess.STDOUT)
        try:
            assert proc.stdin is not None
            if script is not None:
                proc.stdin.write(("\n".join(script) + "\n").encode())
                proc.stdin.flush()
            _wait_for_a_running_transfer(server, proc)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(b"quit\n" if script is not None else None, timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return (err if data_on_stdout else out).decode("utf-8", "replace")


def _assert_aborted(out: str, caplog: pytest.LogCaptureFixture) -> None:
    messages = [r.getMessage() for r in caplog.records]
    server = "\n".join(messages)
    assert any(m.endswith("--> ABOR") for m in messages), f"{out}\n--- server\n{server}"
    assert "426 Connection closed; transfer aborted." in out or "426: Connection closed; transfer aborted." in out, \
        f"{out}\n--- server\n{server}"
    assert "226 ABOR successful." in out or "226: ABOR successful." in out, f"{out}\n--- server\n{server}"
    assert any("RETR /big.bin" in m and m.endswith("failed (aborted)") for m in messages), server
    assert not any("bad command line" in m or "Command not implemented: BOR" in m for m in messages), server


@pytest.mark.peer
@pytest.mark.parametrize("passive", ["on", "off"])
def test_tnftp_interrupt_aborts_a_download(big_server, passive, tmp_path, caplog):
    exe = require_peer("tnftp")
    script = ["user alice secret", f"passive {passive}", "binary", "get big.bin /dev/null"]
    out = _interrupt_download(big_server, [exe, "-n", "-v", big_server.host, str(big_server.port)], script,
                              _env(tmp_path), caplog)
    _assert_aborted(out, caplog)


@pytest.mark.peer
@pytest.mark.parametrize("mode", ["-p", "-A"])
def test_inetutils_ftp_interrupt_aborts_a_download(big_server, mode, tmp_path, caplog):
    exe = require_peer("inetutils-ftp")
    script = ["user alice secret", "binary", "get big.bin /dev/null"]
    out = _interrupt_download(big_server, [exe, "-n", "-v", mode, big_server.host, str(big_server.port)], script,
                              _env(tmp_path), caplog)
    _assert_aborted(out, caplog)


@pytest.mark.peer
def test_ncftpget_interrupt_aborts_a_download(big_server, tmp_path, caplog):
    exe = require_peer("ncftpget")
    url = f"ftp://alice:secret@{big_server.host}:{big_server.port}/big.bin"
    out = _interrupt_download(big_server, [exe, "-d", "stderr", "-c", url], None, _env(tmp_path), caplog,
                              data_on_stdout=True)
    _assert_aborted(out, caplog)
