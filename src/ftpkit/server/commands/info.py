"""SYST FEAT OPTS HELP STAT NOOP SITE TYPE MODE STRU: what the server says about itself and the session."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ftpkit import __version__
from ftpkit.protocol.features import format_features
from ftpkit.protocol.listing import format_mlst_feature, format_mlst_opts_reply, parse_mlst_opts
from ftpkit.server.commands import integrity
from ftpkit.server.commands.table import COMMANDS, command
from ftpkit.server.listings import list_lines, split_list_arg
from ftpkit.server.storage import StorageError

if TYPE_CHECKING:
    from ftpkit.protocol.commands import Command
    from ftpkit.server.session import Session

FEATURES = (
    ("EPRT", ""),
    ("EPSV", ""),
    ("MDTM", ""),
    ("PASV", ""),
    ("REST", "STREAM"),
    ("SIZE", ""),
    ("TVFS", ""),
    ("UTF8", ""),
    ("FTPKIT-PROBE", "WHOAMI;LASTPORT"),
)
"""``FTPKIT-PROBE``: ``SITE WHOAMI`` tells the client its address as this server sees it, ``SITE LASTPORT`` the last
PORT/EPRT command as this server received it. ``ftpkit doctor`` uses them to prove a NAT between client and server and
to catch a NAT helper (ALG) that rewrote PORT in transit."""


@command("SYST", login=False, arg="none")
async def syst(s: Session, cmd: Command) -> None:
    await s.reply(215, "UNIX Type: L8")


@command("NOOP", login=False, arg="none")
async def noop(s: Session, cmd: Command) -> None:
    await s.reply(200, "NOOP ok.")


TLS_FEATURES = (("AUTH", "TLS"), ("AUTH", "SSL"), ("PBSZ", ""), ("PROT", ""))


@command("FEAT", login=False, arg="none")
async def feat(s: Session, cmd: Command) -> None:
    features = FEATURES + (TLS_FEATURES if s.shared.tls_context is not None and s.cfg.tls != "off" else ())
    features += tuple(integrity.features(s))
    mlst = format_mlst_feature(s.mlst_facts).split(" ", 1)
    features += ((mlst[0], mlst[1]),)
    reply = format_features(sorted(features))
    await s.reply(reply.code, list(reply.lines))


@command("OPTS", login=False, arg="required", syntax="OPTS UTF8 ON | OPTS MLST facts | OPTS HASH [algorithm]")
async def opts(s: Session, cmd: Command) -> None:
    name, _, value = (cmd.arg or "").partition(" ")
    name = name.upper()
    if name == "UTF8":
        if value.strip().upper() in ("ON", ""):
            await s.reply(200, "Always in UTF8 mode.")
        else:
            await s.reply(501, "UTF8 cannot be turned off: names are UTF-8 (others pass through byte-exact).")
    elif name == "MLST":
        s.mlst_facts = parse_mlst_opts(value)
        await s.reply(200, format_mlst_opts_reply(s.mlst_facts))
    elif name == "HASH":
        await integrity.opts_hash(s, value)
    else:
        await s.reply(501, f"Option {name[:20]} not understood.")


@command("TYPE", login=False, arg="required", syntax="TYPE A [N] | I | L 8")
async def type_(s: Session, cmd: Command) -> None:
    words = (cmd.arg or "").upper().split()
    if words in (["A"], ["A", "N"]):
        s.ascii = True
        await s.reply(200, "Switching to ASCII mode.")
    elif words in (["I"], ["L", "8"]):
        s.ascii = False
        await s.reply(200, "Switching to Binary mode.")
    elif words and words[0] in ("A", "E", "I", "L"):
        await s.reply(504, f"TYPE {cmd.arg} not implemented: use TYPE A or TYPE I.")
    else:
        await s.reply(501, f"TYPE {cmd.arg} not understood: use TYPE A or TYPE I.")


@command("MODE", login=False, arg="required", syntax="MODE S")
async def mode(s: Session, cmd: Command) -> None:
    if (cmd.arg or "").strip().upper() == "S":
        await s.reply(200, "Mode set to S.")
    else:
        await s.reply(504, "Only MODE S (stream) is implemented.")


@command("STRU", login=False, arg="required", syntax="STRU F")
async def stru(s: Session, cmd: Command) -> None:
    if (cmd.arg or "").strip().upper() == "F":
        await s.reply(200, "Structure set to F.")
    else:
        await s.reply(504, "Only STRU F (file) is implemented.")


@command("HELP", login=False, syntax="HELP [command]")
async def help_(s: Session, cmd: Command) -> None:
    if cmd.arg:
        spec = COMMANDS.get(cmd.arg.strip().upper())
        if spec is None:
            await s.reply(502, f"Unknown command {cmd.arg.strip()[:8]}.")
        else:
            await s.reply(214, f"Syntax: {spec.syntax}")
        return
    verbs = sorted(COMMANDS)
    rows = [" " + " ".join(f"{v:<5}" for v in verbs[i:i + 10]).rstrip() for i in range(0, len(verbs), 10)]
    await s.reply(214, ["The following commands are recognized.", *rows, "Help OK."])


@command("SITE", arg="required", syntax="SITE HELP")
async def site(s: Session, cmd: Command) -> None:
    sub = (cmd.arg or "").split(" ")[0].upper()
    if sub == "HELP":
        await s.reply(214, ["SITE commands:", " HELP", " WHOAMI    your address and port as this server sees them",
                            " LASTPORT  the last PORT/EPRT command as this server received it",
                            " CHMOD     CHMOD 644 path: permission bits 000-777 (write permission needed)", "End"])
    elif sub == "WHOAMI":
        await s.reply(200, f"{s.peer_ip} {s.peer_port}")
    elif sub == "CHMOD":
        await integrity.site_chmod(s, (cmd.arg or "")[len("CHMOD"):])
    elif sub == "LASTPORT":
        if s.last_port_command is None:
            await s.reply(550, "No PORT or EPRT received in this session.")
        else:
            await s.reply(200, s.last_port_command)
    else:
        await s.reply(501, f"SITE {sub[:20]} not understood (SITE HELP lists what is).")


STAT_MAX_ENTRIES = 10_000
"""Entries a STAT of a folder shows in its one reply (about 1 MB)."""


@command("STAT", login=False, syntax="STAT [path]")
async def stat(s: Session, cmd: Command) -> None:
    transfer = s.transfer
    if transfer is not None and not cmd.arg:
        elapsed = time.monotonic() - transfer.started
        await s.reply(213, f"Status: {transfer.command.verb} {transfer.path}: {transfer.progress} bytes so far "
                           f"in {elapsed:.1f} s ({transfer.channel.describe()}).")
        return
    if not cmd.arg:
        data = s.data.describe() if s.data is not None else "none announced"
        lines = [
            f"ftpkit {__version__} status:",
            f" Connected to {s.peer_ip}",
            f" Logged in as {s.user}" if s.account else " Not logged in",
            f" TYPE: {'ASCII' if s.ascii else 'BINARY'}; STRUcture: File; transfer MODE: Stream",
            f" Data connection: {data}",
            f" Session transfers: {s.transfers}",
            "End of status",
        ]
        await s.reply(211, lines)
        return
    if s.account is None:
        await s.reply(530, "Please log in with USER and PASS.")
        return
    entries: list[str] = []
    try:
        async for line in await list_lines(s, split_list_arg(cmd.arg)):
            if len(entries) == STAT_MAX_ENTRIES:
                # one reply holds its lines: past this many, LIST or MLSD stream the rest over a data connection
                entries.append(f"(STAT shows at most {STAT_MAX_ENTRIES} entries: use LIST or MLSD for them all)")
                break
            entries.append(line)
    except StorageError as exc:
        await s.reply(550 if exc.code != 501 else 501, f"{exc.reason}.")
        return
    await s.reply(213, [f"Status of {s.vpath(split_list_arg(cmd.arg))}:", *entries, "End of status"])

