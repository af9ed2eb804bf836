"""CWD CDUP PWD MKD RMD DELE RNFR RNTO SIZE MDTM MLST: the file system over the control connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftpkit.protocol.listing import Facts, mlst_time
from ftpkit.protocol.pathname import format_257_path
from ftpkit.server.commands.table import command
from ftpkit.server.listings import mlst_line
from ftpkit.server.storage import StorageError

if TYPE_CHECKING:
    from ftpkit.protocol.commands import Command
    from ftpkit.server.session import Session


async def _change_dir(s: Session, target: str) -> None:
    assert s.storage is not None
    try:
        facts = await s.storage.stat(target)
    except StorageError as exc:
        await s.reply(550, f"Failed to change directory: {exc.reason}.")
        return
    if not facts.is_dir:
        await s.reply(550, f"Failed to change directory: {target}: not a directory.")
        return
    s.cwd = target
    await s.reply(250, f"Directory changed to {target}.")


@command("CWD", "XCWD", arg="required", syntax="CWD path")
async def cwd(s: Session, cmd: Command) -> None:
    await _change_dir(s, s.vpath(cmd.arg))


@command("CDUP", "XCUP", arg="none")
async def cdup(s: Session, cmd: Command) -> None:
    await _change_dir(s, s.vpath(".."))


@command("PWD", "XPWD", arg="none")
async def pwd(s: Session, cmd: Command) -> None:
    await s.reply(257, f"{format_257_path(s.cwd)} is the current directory.")


@command("MKD", "XMKD", arg="required", write=True, syntax="MKD path")
async def mkd(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    path = s.vpath(cmd.arg)
    try:
        await s.storage.mkdir(path)
    except StorageError as exc:
        await s.reply(550, f"Create directory failed: {exc.reason}.")
        return
    await s.reply(257, f"{format_257_path(path)} created.")
    s.shared.events.file_changed(s, "mkdir", path)


@command("RMD", "XRMD", arg="required", write=True, syntax="RMD path")
async def rmd(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    path = s.vpath(cmd.arg)
    try:
        await s.storage.rmdir(path)
    except StorageError as exc:
        await s.reply(550, f"Remove directory failed: {exc.reason}.")
        return
    await s.reply(250, "Remove directory operation successful.")
    s.shared.events.file_changed(s, "rmdir", path)


@command("DELE", arg="required", write=True, syntax="DELE path")
async def dele(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    path = s.vpath(cmd.arg)
    try:
        await s.storage.remove(path)
    except StorageError as exc:
        await s.reply(550, f"Delete operation failed: {exc.reason}.")
        return
    await s.reply(250, "Delete operation successful.")
    s.shared.events.file_changed(s, "delete", path)


@command("RNFR", arg="required", write=True, syntax="RNFR path")
async def rnfr(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    path = s.vpath(cmd.arg)
    try:
        await s.storage.stat(path)
    except StorageError as exc:
        await s.reply(550, f"RNFR failed: {exc.reason}.")
        return
    s.rename_from = path
    await s.reply(350, "Ready for RNTO.")


@command("RNTO", arg="required", write=True, syntax="RNTO path")
async def rnto(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    source, s.rename_from = s.rename_from, None
    if source is None:
        await s.reply(503, "RNFR required first.")
        return
    target = s.vpath(cmd.arg)
    try:
        await s.storage.rename(source, target)
    except StorageError as exc:
        await s.reply(550, f"Rename failed: {exc.reason}.")
        return
    await s.reply(250, "Rename successful.")
    s.shared.events.file_changed(s, "rename", target, source)


async def _file_facts(s: Session, cmd: Command, verb: str) -> Facts | None:
    assert s.storage is not None
    try:
        facts = await s.storage.stat(s.vpath(cmd.arg))
    except StorageError as exc:
        await s.reply(550, f"{exc.reason}.")
        return None
    if not facts.is_file:
        await s.reply(550, f"{s.vpath(cmd.arg)}: {verb} works on plain files only.")
        return None
    return facts


@command("SIZE", arg="required", syntax="SIZE path")
async def size(s: Session, cmd: Command) -> None:
    """To a user who may upload, the size of an interrupted upload of the name when there is one: what a client
    resuming the upload (REST n + STOR, APPE) needs; the file itself is still the previous version."""
    assert s.storage is not None
    if s.account is not None and s.account.write:
        try:
            partial = await s.storage.upload_size(s.vpath(cmd.arg))
        except StorageError:
            partial = None
        if partial is not None:
            await s.reply(213, str(partial))
            return
    facts = await _file_facts(s, cmd, "SIZE")
    if facts is not None:
        await s.reply(213, str(facts.size))


@command("MDTM", arg="required", syntax="MDTM path")
async def mdtm(s: Session, cmd: Command) -> None:
    facts = await _file_facts(s, cmd, "MDTM")
    if facts is not None:
        await s.reply(213, mlst_time(facts.mtime))


@command("MLST", syntax="MLST [path]")
async def mlst(s: Session, cmd: Command) -> None:
    try:
        line = await mlst_line(s, cmd.arg)
    except StorageError as exc:
        await s.reply(550, f"{exc.reason}.")
        return
    await s.reply(250, [f"Listing {s.vpath(cmd.arg)}", " " + line, "End"])
