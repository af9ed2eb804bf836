"""AUTH PBSZ PROT CCC: FTPS, explicit TLS on the control connection and protected data connections (RFC 4217,
RFC 2228)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ftpkit.server.commands.table import command
from ftpkit.tls import cipher_name

if TYPE_CHECKING:
    from ftpkit.protocol.commands import Command
    from ftpkit.server.session import Session

log = logging.getLogger("ftpkit.server")


@command("AUTH", login=False, arg="required", syntax="AUTH TLS")
async def auth(s: Session, cmd: Command) -> None:
    mechanism = (cmd.arg or "").strip().upper()
    if s.shared.tls_context is None or s.cfg.tls == "off":
        await s.reply(502, "AUTH not enabled on this server.")
        return
    if s.stream.encrypted:
        await s.reply(503, "The control connection is already protected by TLS.")
        return
    if mechanism not in ("TLS", "SSL", "TLS-C", "TLS-P"):
        await s.reply(504, f"AUTH {mechanism[:10]} not supported: use AUTH TLS.")
        return
    await s.reply(234, f"AUTH {mechanism} successful: start the TLS handshake.")
    dropped = s.conv.discard_pending()
    if dropped:
        log.warning("[%s] discarded %d command(s) pipelined in clear behind AUTH TLS", s.id, dropped)
    try:
        await s.stream.start_tls(s.shared.tls_context, server_side=True, timeout=s.cfg.tls_handshake_timeout)
    except BaseException as exc:
        s.shared.defender.record(s.peer_ip, "tls_failed")
        s.shared.events.tls_failed("control", exc)
        raise
    if mechanism == "TLS-P":
        s.pbsz = s.prot_private = True
    tls = s.stream.tls
    log.info("[%s] control connection now TLS (%s, %s)", s.id, tls.version() if tls else "?",
             (cipher_name(tls) if tls else None) or "?")


@command("PBSZ", login=False, arg="required", syntax="PBSZ 0")
async def pbsz(s: Session, cmd: Command) -> None:
    if not s.stream.encrypted:
        await s.reply(503, "PBSZ needs a protected control connection: AUTH TLS first.")
        return
    s.pbsz = True
    await s.reply(200, "PBSZ=0")


@command("PROT", login=False, arg="required", syntax="PROT P|C")
async def prot(s: Session, cmd: Command) -> None:
    level = (cmd.arg or "").strip().upper()
    if not s.stream.encrypted or not s.pbsz:
        await s.reply(503, "PROT needs AUTH TLS and PBSZ first.")
        return
    if level == "P":
        s.prot_private = True
        await s.reply(200, "Protection level set to P: data connections use TLS.")
    elif level == "C":
        s.prot_private = False
        await s.reply(200, "Protection level set to C: data connections in clear.")
    elif level in ("S", "E"):
        await s.reply(536, f"PROT {level} not supported: use P or C.")
    else:
        await s.reply(504, f"PROT {level[:10]} not understood: use P or C.")


@command("CCC", login=False, arg="none")
async def ccc(s: Session, cmd: Command) -> None:
    if not s.stream.encrypted:
        await s.reply(533, "The control connection is not protected.")
        return
    if not s.cfg.allow_ccc:
        await s.reply(534, "CCC refused by this server's policy (allow_ccc).")
        return
    await s.reply(200, "CCC ok: the control connection continues in clear.")
    await s.stream.stop_tls(timeout=s.cfg.tls_handshake_timeout)
    log.info("[%s] control connection back in clear (CCC)", s.id)
