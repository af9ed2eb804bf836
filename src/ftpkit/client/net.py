"""TCP connections, shared by the client (control and passive data connections) and the doctor: resolve a host
name, connect to one address, and say how a connection failed, telling a refusal (RST: nothing listens there) from
a silent drop (no answer in time: a firewall, or a host that is down)."""

from __future__ import annotations

import asyncio
import socket
from typing import Literal

Failure = Literal["timeout", "refused", "error"]


class ConnectFailed(Exception):
    """A TCP connection that could not be opened: ``outcome`` says how, ``detail`` in a few words."""

    def __init__(self, outcome: Failure, detail: str) -> None:
        super().__init__(detail)
        self.outcome: Failure = outcome
        self.detail = detail


async def resolve(host: str, port: int, timeout: float) -> list[str]:
    """The addresses of ``host``, each once, in the resolver's order of preference. Raises
    :class:`socket.gaierror` for a name that does not resolve and :class:`TimeoutError` without an answer."""
    infos = await asyncio.wait_for(
        asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def connect(address: str, port: int, timeout: float) -> socket.socket:
    """A non-blocking socket connected to ``address`` (an IP address) and ``port``; :class:`ConnectFailed`."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (address, port)), timeout)
    except TimeoutError:
        sock.close()
        raise ConnectFailed("timeout", f"no answer within {timeout:g} s") from None
    except ConnectionRefusedError:
        sock.close()
        raise ConnectFailed("refused", "refused (RST)") from None
    except OSError as exc:
        sock.close()
        raise ConnectFailed("error", exc.strerror or str(exc)) from None
    except BaseException:
        sock.close()
        raise
    return sock
