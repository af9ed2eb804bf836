"""USER PASS ACCT QUIT: logging in and out.

USER never reveals whether a name exists (always 331). A failed PASS is answered after a delay and counted; at
``max_login_failures`` the session gets 421 and is closed. When the user database cannot answer, PASS gets 421 (try
again later), not 530, and is not counted as a failure.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ftpkit.server.accounts import UsersUnavailable
from ftpkit.server.commands.table import command

if TYPE_CHECKING:
    from ftpkit.protocol.commands import Command
    from ftpkit.server.session import Session

log = logging.getLogger("ftpkit.server")


@command("USER", login=False, arg="required", syntax="USER name")
async def user(s: Session, cmd: Command) -> None:
    if s.account is not None:
        await s.reply(503, f"Already logged in as {s.account.name}.")
        return
    s.pending_user = cmd.arg
    if s.tls_required() and not s.stream.encrypted:
        s.pending_user = None
        s.shared.events.login(s, cmd.arg or "", ok=False, reason="tls_required")
        await s.reply(530, "TLS required on this server: send AUTH TLS before USER.")
        return
    if s.shared.accounts.is_anonymous_name(cmd.arg or ""):
        await s.reply(331, "Anonymous login: send your e-mail address as the password.")
    else:
        await s.reply(331, "Please specify the password.")


@command("PASS", login=False, syntax="PASS password")
async def pass_(s: Session, cmd: Command) -> None:
    if s.account is not None:
        await s.reply(503, "Already logged in.")
        return
    if s.pending_user is None:
        await s.reply(503, "Login with USER first.")
        return
    name, s.pending_user = s.pending_user, None
    try:
        account = await s.shared.accounts.authenticate(name, cmd.arg or "", source=s.peer_ip)
    except UsersUnavailable as exc:
        log.warning("[%s] login as %r from %s: %s", s.id, name, s.peer_ip, exc)
        await s.reply(421, "Login service unavailable (user database); try again later.")
        return
    if account is None:
        s.failures += 1
        log.warning("[%s] failed login as %r from %s (%d)", s.id, name, s.peer_ip, s.failures)
        s.shared.events.login(s, name, ok=False)
        banned = s.shared.defender.record(s.peer_ip, "login_failed")
        await asyncio.sleep(s.cfg.login_fail_delay)  # slows password guessing; holds no thread; others carry on
        if banned is not None:
            await s.reply(421, "Too many failed logins from your address: banned for a while.")
        elif s.failures >= s.cfg.max_login_failures:
            await s.reply(421, "Too many failed logins: closing control connection.")
        else:
            await s.reply(530, "Login incorrect.")
        return
    s.account = account
    s.logged_in = True
    s.shared.events.login(s, name, ok=True, reason="anonymous" if account.anonymous else "user")
    s.set_prelogin(False)
    s.storage = s.shared.storage_factory(account.home, s.shared.executor)
    s.cwd = "/"
    access = "read-write" if account.write else "read-only"
    log.info("[%s] login %s from %s (%s)", s.id, account.name, s.peer_ip, access)
    await s.reply(230, f"Login successful ({access}).")


@command("ACCT", login=False, arg="required", syntax="ACCT account")
async def acct(s: Session, cmd: Command) -> None:
    await s.reply(202, "ACCT not needed.")


@command("QUIT", login=False, arg="none")
async def quit_(s: Session, cmd: Command) -> None:
    """During a transfer (the client is leaving now): an upload whose data has all arrived is completed (226), so
    nothing the client sent is lost; anything else is aborted (426). Then 221 and the session ends."""
    await s.finish_or_abort_transfer()
    await s.reply(221, "Goodbye.")


@command("REIN", login=False, arg="none")
async def rein(s: Session, cmd: Command) -> None:
    """RFC 959: log out and start afresh on the same control connection (TLS stays; PBSZ/PROT are reset).
    REIN waits for a transfer in progress, as the RFC says, like every command but ABOR, STAT and QUIT."""
    s.reinitialize()
    log.info("[%s] REIN: logged out", s.id)
    await s.reply(220, "Service ready for new user.")
