"""PORT EPRT PASV EPSV: announcing the data connection.

active (PORT/EPRT): the client announces where it listens; refused when it names another host than the control
connection's peer or a port below 1024 (RFC 2577). passive (PASV/EPSV): the server listens on a port from its
range and announces it; the 227 address is the masquerade address for this client, else the control connection's
local address.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ftpkit.protocol.errors import HostPortError
from ftpkit.protocol.hostport import (
    DataMethod,
    HostPort,
    explain_port,
    format_epsv,
    format_pasv,
    parse_eprt,
    parse_epsv_arg,
    parse_port,
)
from ftpkit.server.commands.table import command
from ftpkit.server.data import ActiveTarget, DataConnectionError, PassiveListener
from ftpkit.server.proxied import epsv_refusal

if TYPE_CHECKING:
    from ftpkit.protocol.commands import Command
    from ftpkit.server.session import Session

log = logging.getLogger("ftpkit.server")


async def _refuse_after_epsv_all(s: Session, verb: str) -> bool:
    if s.epsv_all:
        await s.reply(503, f"{verb} not allowed after EPSV ALL: use EPSV.")
        return True
    return False


async def _active(s: Session, verb: DataMethod, target: HostPort, cmd: Command) -> None:
    refusal = s.active_refusal(target)
    if refusal is not None:
        hint = s.shared.events.port_refused(s, str(cmd), target, refusal)
        await s.reply(501, f"{verb} refused: {refusal}: {hint} (RFC 2577)." if hint else
                      f"{verb} refused: {refusal} (RFC 2577 bounce protection).")
        return
    s.set_data(ActiveTarget(target, verb, s.active_source()))
    await s.reply(200, f"{verb} command successful: data connection to {target} ({explain_port(target.port)}).")


@command("PORT", arg="required", syntax="PORT h1,h2,h3,h4,p1,p2")
async def port(s: Session, cmd: Command) -> None:
    s.last_port_command = str(cmd)
    if await _refuse_after_epsv_all(s, "PORT"):
        return
    if s.is_ipv6:
        await s.reply(522, "PORT is IPv4 only: use EPRT on this IPv6 connection.")
        return
    try:
        target = parse_port(cmd.arg or "")
    except HostPortError as exc:
        await s.reply(501, f"{exc}.")
        return
    await _active(s, "PORT", target, cmd)


@command("EPRT", arg="required", syntax="EPRT |proto|address|port|")
async def eprt(s: Session, cmd: Command) -> None:
    s.last_port_command = str(cmd)
    if await _refuse_after_epsv_all(s, "EPRT"):
        return
    try:
        target = parse_eprt(cmd.arg or "")
    except HostPortError as exc:
        await s.reply(501, f"{exc}.")
        return
    if (target.family == 2) != s.is_ipv6:
        await s.reply(522, f"Network protocol not supported, use ({2 if s.is_ipv6 else 1}).")
        return
    await _active(s, "EPRT", target, cmd)


async def _passive(s: Session, method: DataMethod, announce_host: str) -> PassiveListener | None:
    s.set_data(None)  # a new announcement replaces the last one: its port goes back first
    try:
        listener = PassiveListener(s.shared.pool, s.local_ip, s.peer_ip, HostPort(announce_host, 0), method, s.id,
                                   s.cfg.data_accept_timeout,
                                   on_expire=lambda unused: s.shared.events.passive_expired(s, unused),
                                   deadlines=s.shared.deadlines)
    except DataConnectionError as exc:
        s.set_data(None)
        hint = s.shared.events.passive_failed(s, method, exc)
        await s.reply(425, f"Cannot open passive connection: {exc}" + (f"; {hint}." if hint else "."))
        return None
    s.set_data(listener)
    s.shared.events.passive_announced(s, method, listener.announced)
    return listener


@command("PASV", arg="none")
async def pasv(s: Session, cmd: Command) -> None:
    if await _refuse_after_epsv_all(s, "PASV"):
        return
    if s.is_ipv6:
        await s.reply(522, "PASV is IPv4 only: use EPSV on this IPv6 connection.")
        return
    listener = await _passive(s, "PASV", s.masquerade_for_peer())
    if listener is not None:
        await s.reply(227, format_pasv(listener.announced))


@command("EPSV", syntax="EPSV [1|2|ALL]")
async def epsv(s: Session, cmd: Command) -> None:
    try:
        arg = parse_epsv_arg(cmd.arg)
    except HostPortError as exc:
        await s.reply(501, f"{exc}.")
        return
    if arg == "ALL":
        s.epsv_all = True
        await s.reply(200, "EPSV ALL ok: only EPSV from now on.")
        return
    own = 2 if s.is_ipv6 else 1
    if arg is not None and arg != own:
        await s.reply(522, f"Network protocol not supported, use ({own}).")
        return
    if (behind_balancer := epsv_refusal(s.admission, s.local_ip)) is not None:
        await s.reply(502, f"{behind_balancer}.")
        return
    listener = await _passive(s, "EPSV", s.local_ip)
    if listener is not None:
        await s.reply(229, format_epsv(listener.port))
