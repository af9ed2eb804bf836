"""Plain uploads through two pipes (``SpliceStream``): socket -> pipe by splice(2) on the event loop, each batch
moved out of its pipe by the caller; over real TCP connections on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

from ftpkit.server.splice import PIPE_SIZE, SpliceStream

RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() resets the connection


async def _accepted(listener: socket.socket) -> SpliceStream:
    conn, peer = await asyncio.get_running_loop().sock_accept(listener)
    conn.setblocking(False)
    return SpliceStream(conn, peer[:2], conn.getsockname()[:2])


def _listener() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    return listener


def _drain(pipe: int, count: int) -> bytes:
    """What a backend's write_from_pipe does, into memory."""
    out = bytearray()
    while len(out) < count:
        out += os.read(pipe, count - len(out))
    return bytes(out)


def _send(port: int, payload: bytes, reset: bool = False) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)


def test_every_byte_arrives_in_batches_of_at_most_one_pipe() -> None:
    payload = os.urandom(9 * PIPE_SIZE + 12345)

    async def main() -> tuple[bytes, list[int]]:
        listener = _listener()
        sender = threading.Thread(target=_send, args=(listener.getsockname()[1], payload))
        sender.start()
        stream = await _accepted(listener)
        got, sizes = bytearray(), []
        for _ in range(10000):  # bounded
            batch = await stream.read_batch(idle=10)
            if batch is None:
                break
            got += _drain(*batch)
            sizes.append(batch[1])
        stream.abort()
        listener.close()
        await asyncio.get_running_loop().run_in_executor(None, sender.join, 30)
        assert stream.received == len(payload)
        return bytes(got), sizes

    got, sizes = asyncio.run(main())
    assert got == payload
    assert max(sizes) <= PIPE_SIZE and min(sizes) > 0


def test_no_byte_for_the_idle_time_is_a_timeout() -> None:
    async def main() -> None:
        listener = _listener()
        client = socket.create_connection(("127.0.0.1", listener.getsockname()[1]))
        stream = await _accepted(listener)
        with pytest.raises(TimeoutError):
            await stream.read_batch(idle=0.2)
        stream.abort()
        client.close()
        listener.close()

    asyncio.run(main())


def test_a_reset_hands_out_what_arrived_then_is_a_connection_error() -> None:
    payload = os.urandom(100000)

    async def main() -> bytes:
        listener = _listener()
        sender = threading.Thread(target=_send, args=(listener.getsockname()[1], payload, True))
        stream = await asyncio.gather(_accepted(listener), asyncio.to_thread(sender.run))
        got = bytearray()
        with pytest.raises(ConnectionResetError):
            for _ in range(1000):  # bounded
                batch = await stream[0].read_batch(idle=10)
                assert batch is not None, "a reset is not the end of the data"
                got += _drain(*batch)
        stream[0].abort()
        listener.close()
        return bytes(got)

    got = asyncio.run(main())
    assert payload.startswith(got)  # what a reset discards in the kernel never arrives; the rest is in order


def test_urgent_data_on_the_data_connection_neither_hangs_nor_corrupts() -> None:
    """TCP urgent data (send MSG_OOB) in an upload: splice(2) stops at the urgent mark and says 0, as at the end;
    the upload must then fail with a connection error (or have every byte), never end early as if complete."""
    before, after = os.urandom(5000), os.urandom(5000)

    def send_urgent(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(before)
            sock.send(b"!", socket.MSG_OOB)
            sock.sendall(after)

    async def main() -> bytes | None:
        listener = _listener()
        sender = threading.Thread(target=send_urgent, args=(listener.getsockname()[1],))
        stream, _ = await asyncio.gather(_accepted(listener), asyncio.to_thread(sender.run))
        got = bytearray()
        try:
            for _ in range(1000):  # bounded
                batch = await stream.read_batch(idle=5)
                if batch is None:
                    return bytes(got)
                got += _drain(*batch)
        except ConnectionError:
            return None
        finally:
            stream.abort()
            listener.close()
        raise AssertionError("no end")

    got = asyncio.run(asyncio.wait_for(main(), 30))
    assert got is None or got in (before + after, before + b"!" + after), (len(got or b""),)
