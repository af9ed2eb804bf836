"""The bare-socket data connection of plain downloads (``SocketStream``): sendfile(2) and send(2) from the event
loop, waiting for the socket only when the kernel's send buffer is full; over a real socket pair."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from pathlib import Path

import pytest

from ftpkit.server.data import UNSENT_LOW_WATER, SocketStream


def _pair(sndbuf: int = 0) -> tuple[socket.socket, socket.socket]:
    server, client = socket.socketpair()
    if sndbuf:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    server.setblocking(False)
    return server, client


def _read_all(sock: socket.socket, out: bytearray, gate: threading.Event | None = None) -> None:
    if gate is not None:
        gate.wait(30)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        out += chunk


def _stream(sock: socket.socket) -> SocketStream:
    return SocketStream(sock, ("127.0.0.1", 1), ("127.0.0.1", 2))


def test_sendfile_waits_for_a_slow_reader_and_sends_every_byte(tmp_path: Path) -> None:
    data = os.urandom(8 << 20)
    (tmp_path / "f.bin").write_bytes(data)
    server, client = _pair(sndbuf=16384)
    got = bytearray()
    gate = threading.Event()
    reader = threading.Thread(target=_read_all, args=(client, got, gate))
    reader.start()

    async def main() -> tuple[int, int]:
        stream = _stream(server)
        with (tmp_path / "f.bin").open("rb") as fh:
            # the reader starts only once the send buffer is full: the stream has to wait for the socket
            asyncio.get_running_loop().call_later(0.05, gate.set)
            first = await stream.sendfile(fh, 0, 3 << 20, idle=10)
            rest = await stream.sendfile(fh, first, 16 << 20, idle=10)  # more than is left: the end of the file
        await stream.close()
        return first, rest

    first, rest = asyncio.run(main())
    reader.join(30)
    assert (first, first + rest) == (3 << 20, len(data))
    assert bytes(got) == data


def test_a_big_download_lets_other_tasks_run(tmp_path: Path) -> None:
    """Once the socket is full, the rest goes from the event loop's writer callback: other sessions run meanwhile."""
    data = os.urandom(8 << 20)
    (tmp_path / "f.bin").write_bytes(data)
    server, client = _pair(sndbuf=16384)
    got = bytearray()
    reader = threading.Thread(target=_read_all, args=(client, got))
    reader.start()
    offset = 12345

    async def main() -> tuple[int, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:  # another session's work
            nonlocal ticks
            for _ in range(1_000_000):  # bounded
                if done.is_set():
                    return
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        stream = _stream(server)
        with (tmp_path / "f.bin").open("rb") as fh:
            sent = await stream.sendfile(fh, offset, len(data), idle=10)
        done.set()
        await other
        await stream.close()
        return sent, ticks

    sent, ticks = asyncio.run(main())
    reader.join(30)
    assert sent == len(data) - offset
    assert bytes(got) == data[offset:]
    assert ticks >= 10  # a 16 KiB send buffer fills hundreds of times: the loop turned in between


def test_sendfile_with_an_offset_and_a_count(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    (tmp_path / "f.bin").write_bytes(data)
    server, client = _pair()
    got = bytearray()
    reader = threading.Thread(target=_read_all, args=(client, got))
    reader.start()

    async def main() -> int:
        stream = _stream(server)
        with (tmp_path / "f.bin").open("rb") as fh:
            sent = await stream.sendfile(fh, 1000, 5000, idle=10)
        await stream.close()
        return sent

    assert asyncio.run(main()) == 5000
    reader.join(30)
    assert bytes(got) == data[1000:6000]


def test_a_file_system_without_sendfile_is_read_and_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "f.bin").write_bytes(data)

    def no_sendfile(*_: object) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")  # what sendfile(2) says where the file system lacks it

    monkeypatch.setattr(os, "sendfile", no_sendfile)
    server, client = _pair(sndbuf=16384)
    got = bytearray()
    reader = threading.Thread(target=_read_all, args=(client, got))
    reader.start()

    async def main() -> None:
        stream = _stream(server)
        position = 0
        with (tmp_path / "f.bin").open("rb") as fh:
            for _ in range(100):  # bounded: a chunk of at most 1 MiB at a time
                sent = await stream.sendfile(fh, position, len(data) - position, idle=10)
                if sent == 0:
                    break
                position += sent
        await stream.close()

    asyncio.run(main())
    reader.join(30)
    assert bytes(got) == data


def test_a_client_that_reads_nothing_times_out(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(4 << 20))
    server, client = _pair(sndbuf=16384)

    async def main() -> None:
        stream = _stream(server)
        with (tmp_path / "f.bin").open("rb") as fh, pytest.raises(TimeoutError):
            await stream.sendfile(fh, 0, 4 << 20, idle=0.2)
        stream.abort()

    asyncio.run(main())
    client.close()


def test_write_sends_everything_and_a_reset_is_a_connection_error() -> None:
    server, client = _pair(sndbuf=16384)
    got = bytearray()
    reader = threading.Thread(target=_read_all, args=(client, got))
    reader.start()
    payload = os.urandom(2 << 20)

    async def main() -> None:
        stream = _stream(server)
        await stream.write(payload, idle=10)
        await stream.close()

    asyncio.run(main())
    reader.join(30)
    assert bytes(got) == payload

    server, client = _pair(sndbuf=16384)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # the client went away

    async def broken() -> None:
        stream = _stream(server)
        with pytest.raises(ConnectionError):
            for _ in range(100):  # bounded: the first sends may still be taken before the error shows
                await stream.write(b"x" * 65536, idle=5)
        stream.abort()

    asyncio.run(broken())


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2], timeout=30)
        server, _ = listener.accept()
    server.setblocking(False)
    return server, client


def _unsent_low_water(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_NOTSENT_LOWAT", 25))


def test_a_download_bounds_the_unsent_queue(tmp_path: Path) -> None:
    """A plain download's socket gets TCP_NOTSENT_LOWAT: the kernel paces it, and sends it in the server's time
    (not when the receiver's ACKs open the window)."""
    data = os.urandom(8 << 20)
    (tmp_path / "f.bin").write_bytes(data)
    server, client = _tcp_pair()
    default = _unsent_low_water(server)
    got = bytearray()
    reader = threading.Thread(target=_read_all, args=(client, got))
    reader.start()

    async def main() -> tuple[int, int]:
        stream = _stream(server)
        with (tmp_path / "f.bin").open("rb") as fh:
            sent = await stream.sendfile(fh, 0, len(data), idle=10)
        low_water = _unsent_low_water(server)
        await stream.close()
        return sent, low_water

    sent, low_water = asyncio.run(main())
    reader.join(30)
    client.close()
    assert sent == len(data) and bytes(got) == data
    assert low_water == UNSENT_LOW_WATER
    assert default != UNSENT_LOW_WATER
