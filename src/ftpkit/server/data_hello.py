"""The ClientHello of a protected data connection, screened before ``loop.start_tls`` hands it to OpenSSL.

A data connection runs on asyncio's TLS transport (``loop.start_tls``), which reads the socket itself: the server
cannot read the ClientHello first, as :class:`ftpkit.tls.ControlStream` does on a control connection, and hand the
bytes on. So it *peeks* at them (``MSG_PEEK`` on a duplicate of the socket, while the transport is paused): they stay
in the kernel for OpenSSL. While the ClientHello is incomplete, ``SO_RCVLOWAT`` makes the socket readable only once
more bytes have arrived, so the wait costs no CPU. The same rules as on the control connection apply
(:meth:`ftpkit.tls.ServerContext.refusal`: ALPN without ``ftp``, strict SNI), and what is not a ClientHello is
refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from ftpkit.tls import ServerContext
from ftpkit.tls_hello import MAX_HELLO, ClientHello, NotClientHello, fatal_alert, read_client_hello

PEEK_SIZE = MAX_HELLO + 64  # a ClientHello of the largest size taken, with its record headers


class HelloRefused(Exception):
    """The data connection's first flight is refused; the text says why (for the 522 reply and the log)."""


async def screen_data_hello(transport: asyncio.Transport, context: ServerContext, timeout: float) -> None:
    """Wait for the whole ClientHello on ``transport`` (paused) and refuse it with its alert, or return and leave it
    unread. :class:`HelloRefused` on refusal (the alert is sent and the ClientHello consumed, so the close is clean),
    on a peer that closes first, and after ``timeout`` seconds."""
    own = transport.get_extra_info("socket")
    if own is None:
        return
    loop = asyncio.get_running_loop()
    with socket.fromfd(own.fileno(), own.family, own.type) as sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                hello, size = await _peek(loop, sock)
        except TimeoutError:
            raise HelloRefused("TLS handshake timed out") from None
        finally:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        refusal = context.refusal(hello)
        if refusal is None:
            return
        with contextlib.suppress(OSError):
            sock.recv(size)  # the ClientHello: read, so closing sends FIN rather than a reset over the alert
    transport.write(fatal_alert(refusal[0]))
    raise HelloRefused(refusal[1])


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> tuple[ClientHello, int]:
    seen = -1
    for _ in range(PEEK_SIZE + 2):  # bounded: every pass sees more bytes than the last, at most PEEK_SIZE
        try:
            data = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        except OSError as exc:
            raise HelloRefused(f"the data connection broke during the TLS handshake: {exc}") from None
        if data is not None:
            if not data or len(data) == seen:  # readable without a byte more: the end of the stream
                raise HelloRefused("the client closed the data connection during the TLS handshake")
            try:
                hello = read_client_hello(data)
            except NotClientHello as exc:
                with contextlib.suppress(OSError):
                    sock.recv(len(data))  # read, so that closing sends FIN rather than a reset
                raise HelloRefused(f"not a TLS ClientHello: {exc}") from None
            if hello is not None:
                return hello, len(data)
            seen = len(data)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, seen + 1)
        await _readable(loop, sock)
    raise HelloRefused("the ClientHello did not complete")


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
