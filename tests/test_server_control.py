"""The server's control connection on the bare socket (``server/control.py``): the listener that accepts in its
reader callback, and the connection's own buffering, flow control, close and loss; over real TCP sockets."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import textwrap
import threading

from ftpkit.server.control import READ_LIMIT, WRITE_HIGH, ControlConnection, Listener


async def _connected(body, small: bool = False):  # type: ignore[no-untyped-def]
    """Run ``body(conn, client)`` with a ControlConnection accepted by a Listener and the client's socket;
    ``small``: small socket buffers on both ends (loopback's autotuned ones hold megabytes)."""
    got: asyncio.Future[ControlConnection] = asyncio.get_running_loop().create_future()
    hold = asyncio.Event()

    async def on_connection(conn: ControlConnection) -> None:
        got.set_result(conn)
        await hold.wait()

    listener = Listener("127.0.0.1", 0, 16, on_connection)
    port = listener.sockets[0].getsockname()[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    client.settimeout(10)
    client.connect(("127.0.0.1", port))
    try:
        conn = await asyncio.wait_for(got, 10)
        if small:
            server_sock = conn.get_extra_info("socket")
            server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        assert conn.get_extra_info("peername") == client.getsockname()
        assert conn.get_extra_info("sockname") == client.getpeername()
        return await body(conn, client)
    finally:
        hold.set()
        client.close()
        listener.close()
        assert not listener.is_serving()


def _read_exactly(sock: socket.socket, n: int, out: bytearray) -> None:
    while len(out) < n:
        chunk = sock.recv(65536)
        if not chunk:
            return
        out += chunk


def test_replies_the_kernel_does_not_take_wait_in_order_and_drain_waits_for_them() -> None:
    async def body(conn: ControlConnection, client: socket.socket) -> None:
        lines = [b"%06d reply line that the client does not read yet\r\n" % i for i in range(40_000)]
        for line in lines:  # about 2 MB: far more than the kernel's buffers hold
            conn.write(line)
        assert conn.get_write_buffer_size() > WRITE_HIGH
        drained = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        assert not drained.done()  # above the high-water mark: drain waits for the client
        expected = b"".join(lines)
        out = bytearray()
        reader = threading.Thread(target=_read_exactly, args=(client, len(expected), out))
        reader.start()
        await asyncio.wait_for(drained, 30)
        for _ in range(3000):  # bounded: until the kernel has taken the rest
            if conn.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, reader.join, 30)
        assert bytes(out) == expected

    asyncio.run(_connected(body, small=True))


def test_close_sends_what_waits_first_then_the_end() -> None:
    async def body(conn: ControlConnection, client: socket.socket) -> None:
        data = b"x" * (3 << 20)
        conn.write(data)
        assert conn.get_write_buffer_size() > 0
        conn.close()
        assert conn.is_closing()
        conn.write(b"after the close")  # ignored, as a closing transport does
        out = bytearray()
        reader = threading.Thread(target=_read_exactly, args=(client, len(data) + 100, out))
        reader.start()
        await asyncio.wait_for(conn.wait_closed(), 30)
        await asyncio.get_running_loop().run_in_executor(None, reader.join, 30)
        assert bytes(out) == data  # every byte, then the end of the stream (nothing after the close)

    asyncio.run(_connected(body, small=True))


def test_reading_pauses_beyond_the_limit_and_goes_on_when_taken() -> None:
    async def body(conn: ControlConnection, client: socket.socket) -> None:
        flood = b"NOOP\r\n" * 5_000_000  # 30 MB that the session does not take for now: more than the kernel holds
        client.settimeout(None)  # sendall's timeout would count the whole flood
        sender = threading.Thread(target=client.sendall, args=(flood,))
        sender.start()
        seen = 0
        for _ in range(500):  # bounded: let the connection read what it will
            await asyncio.sleep(0.01)
            seen = max(seen, len(conn._buffer))
        assert READ_LIMIT < seen <= READ_LIMIT + 65536  # one read past the limit, then the kernel holds the rest
        assert sender.is_alive()  # the client is stopped by TCP, not by us dropping bytes
        got = bytearray()
        for _ in range(100_000):  # bounded: take everything as a session would
            data = conn.take()
            if data is None:
                waiter = asyncio.get_running_loop().create_future()
                conn.wake_on_input(waiter)
                await asyncio.wait_for(waiter, 10)
                conn.wake_on_input(None)
                continue
            got += data
            if len(got) == len(flood):
                break
        await asyncio.get_running_loop().run_in_executor(None, sender.join, 30)
        assert bytes(got) == flood

    asyncio.run(_connected(body))


def test_a_reset_is_the_reads_error_and_drain_says_so() -> None:
    async def body(conn: ControlConnection, client: socket.socket) -> None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST
        data = None
        error: BaseException | None = None
        for _ in range(1000):  # bounded
            try:
                data = conn.take()
            except ConnectionError as exc:
                error = exc
                break
            if data == b"":
                break
            await asyncio.sleep(0.01)
        assert isinstance(error, ConnectionResetError) or data == b""
        for _ in range(100):  # a write into a reset connection finds the loss, at the latest the second time
            conn.write(b"221 Goodbye.\r\n")
            if conn.is_closing():
                break
            await asyncio.sleep(0.01)
        assert conn.is_closing()
        try:
            await conn.drain()
        except ConnectionResetError:
            pass
        else:
            raise AssertionError("drain after the loss did not raise")

    asyncio.run(_connected(body))


def test_the_listener_stops_accepting_when_out_of_descriptors_and_goes_on() -> None:
    # In a child process: the descriptor limit is lowered for real until accept(2) says EMFILE.
    script = textwrap.dedent("""
        import asyncio, resource, socket, sys
        from ftpkit.server import control
        control.ACCEPT_RETRY = 0.2
        sessions = []

        async def on_connection(conn):
            sessions.append(conn)
            conn.write(b"220 hello\\r\\n")

        async def main():
            listener = control.Listener("127.0.0.1", 0, 16, on_connection)
            port = listener.sockets[0].getsockname()[1]
            first = socket.create_connection(("127.0.0.1", port), timeout=10)
            for _ in range(500):
                if sessions:
                    break
                await asyncio.sleep(0.01)
            import os
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            used = max(int(fd) for fd in os.listdir("/proc/self/fd")) - 1  # without the listing's own
            resource.setrlimit(resource.RLIMIT_NOFILE, (used + 1, hard))  # no room for the accepted one
            await asyncio.sleep(0.5)
            stuck = len(sessions)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for _ in range(500):
                if len(sessions) == 2:
                    break
                await asyncio.sleep(0.01)
            print(stuck, len(sessions), client.recv(100))
            listener.close()

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "1 2 b'220 hello\\r\\n'"
    assert "cannot accept a control connection" in done.stderr  # said once, not a busy loop
    assert done.stderr.count("cannot accept") <= 5
