"""The PROXY protocol on the control listener (never on data ports): who may send a header, reading it before the
220 greeting, and what a session learns from it. The header itself is parsed by the protocol core
(:mod:`ftpkit.protocol.proxyproto`).

- A source in ``proxy_allowed`` (a load balancer) gets ``proxy_header_timeout`` seconds to send its header; the
  server speaks first in FTP, so the greeting waits for it. With the header, the session's peer is the real client
  (RFC 2577 checks, per-IP limits, bans, logs and the masquerade map see it). ``LOCAL`` (v2) and ``UNKNOWN`` (v1)
  carry no client: they are the balancer's own connections (HAProxy's health checks with send-proxy-v2), kept out
  of the info log.
- In ``required`` mode any other source is refused with 421; in ``optional`` mode it is a direct client, and a
  PROXY header it sends anyway is refused (:func:`stray_header`), as is any header while the mode is ``off``.
- A malformed header, a late one, or none where one is required: the connection is closed and a warning logged.
- Data connections go straight to the node (its own passive range and masquerade address), so EPSV, which sends
  the client back to the balancer's address, is refused when the client dialled another address than the node's
  (:func:`epsv_refusal`): clients fall back to PASV.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftpkit.protocol.hostport import plain_ip
from ftpkit.protocol.proxyproto import ProxyHeader, ProxyHeaderError, detect, parse_proxy_header
from ftpkit.protocol.replies import Reply
from ftpkit.server.config import ServerConfig

if TYPE_CHECKING:
    from ftpkit.server.control import ControlConnection
    from ftpkit.tls import ByteWriter

log = logging.getLogger("ftpkit.server")
READ_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Admission:
    """What the accept path learnt before the session starts."""

    client: tuple[str, int] | None = None  # the real client from a header; None: the connection's own peer
    proxy: str | None = None  # the balancer that sent the header
    early: bytes = b""  # bytes that followed the header (the client's, e.g. a TLS ClientHello)
    health_check: bool = False  # LOCAL / UNKNOWN: the balancer's own connection
    dialled: tuple[str, int] | None = None  # the address the client connected to (the balancer's), from a header

    @property
    def header_received(self) -> bool:
        return self.proxy is not None


def is_allowed(cfg: ServerConfig, ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address.version == net.version and address in net for net in cfg.proxy_allowed)


async def _refuse(writer: ByteWriter, reply: Reply | None) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        if reply is not None:
            writer.write(reply.to_bytes())
            await writer.drain()
    writer.close()


async def admit(cfg: ServerConfig, conn: ControlConnection, ip: str) -> Admission | None:
    """Read the PROXY header of a new control connection as ``cfg`` says; ``None`` when the connection was refused
    (and closed, the reason logged)."""
    if not is_allowed(cfg, ip):
        if cfg.proxy_protocol == "required":
            log.warning("refused %s: not in proxy_allowed (proxy_protocol required: clients come through the load "
                        "balancer)", ip)
            await _refuse(conn, Reply.of(421, "This server is reached through its load balancer only."))
            return None
        return Admission()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.proxy_header_timeout
    received = b""
    while True:
        try:
            header = parse_proxy_header(received)
        except ProxyHeaderError as exc:
            if detect(received) == "none" and cfg.proxy_protocol == "optional":
                return Admission(early=received)  # a direct client from an allowed network, talking first
            log.warning("refused %s: PROXY protocol header: %s", ip, exc)
            await _refuse(conn, None)
            return None
        if header is not None:
            return _admission(header, received, ip)
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(conn.read(READ_SIZE), remaining)
        except TimeoutError:
            if not received and cfg.proxy_protocol == "optional":
                return Admission()  # nothing: a direct client waiting for the greeting
            log.warning("refused %s: no complete PROXY protocol header within %g s (%d bytes)", ip,
                        cfg.proxy_header_timeout, len(received))
            await _refuse(conn, None)
            return None
        except (ConnectionError, OSError) as exc:
            log.debug("connection from %s lost before its PROXY header: %s", ip, exc)
            await _refuse(conn, None)
            return None
        if not data:
            log.debug("connection from %s closed before its PROXY header (%d bytes)", ip, len(received))
            await _refuse(conn, None)
            return None
        received += data


def _admission(header: ProxyHeader, received: bytes, ip: str) -> Admission:
    early = received[header.length:]
    if header.health_check:
        log.debug("PROXY %s from %s: a health check", header.command if header.version == 2 else "UNKNOWN", ip)
        return Admission(None, ip, early, health_check=True)
    if header.protocol not in ("TCP4", "TCP6") or header.source is None:
        log.debug("PROXY header from %s for %s: the connection's own addresses are used", ip, header.protocol)
        return Admission(None, ip, early)
    return Admission(header.source, ip, early, dialled=header.destination)


def epsv_refusal(admission: Admission | None, local_ip: str) -> str | None:
    """Why EPSV cannot work on this session, or ``None``. EPSV names only a port: the client connects to the address
    it dialled for the control connection, here the balancer's, where this node's passive ports are not (each node
    keeps its own passive range and address). Refused, clients fall back to PASV, whose 227 names this node."""
    if admission is None or admission.dialled is None or plain_ip(admission.dialled[0]) == local_ip:
        return None
    return (f"EPSV cannot work through the load balancer ({admission.dialled[0]} is not this node): use PASV, "
            f"its reply names this node")


def stray_header(cfg: ServerConfig, admission: Admission | None, peer_ip: str, data: bytes) -> str | None:
    """Why the first bytes of a session, a PROXY header where none is accepted, are refused; or ``None``."""
    if (admission is not None and admission.header_received) or detect(data) not in ("v1", "v2"):
        return None
    if cfg.proxy_protocol == "off":
        return f"PROXY protocol header from {peer_ip} refused: proxy_protocol is off"
    if is_allowed(cfg, peer_ip):
        return f"PROXY protocol header from {peer_ip} refused: it came after the greeting (proxy_header_timeout)"
    return f"PROXY protocol header from {peer_ip} refused: {peer_ip} is not in proxy_allowed"
