"""RETR STOR STOU APPE LIST NLST MLSD REST ABOR ALLO: everything that moves data over a data connection.

A transfer command is checked and its file opened first (550 on failure, nothing touches the network); then a
task of its own opens the data connection (425 when it cannot), sends 150, moves the data and answers 226 (or
426 when the data connection breaks, 451 on a local error, 552 when storage is full). Meanwhile the session keeps
reading the control connection, so ABOR (426 then 226) and STAT (bytes so far) are answered during the transfer.

Downloads in TYPE I without TLS go through the kernel's sendfile(2) on the bare socket (a :class:`SocketStream`,
no transport); uploads are read in large chunks and written by a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftpkit.protocol.ascii import FromNetwork, ToNetwork
from ftpkit.server.commands.table import command
from ftpkit.server.data import (
    SMALL_BUFFER,
    UPLOAD_BUFFER,
    AnyDataStream,
    DataConnectionError,
    DataStream,
    DataTLSError,
    SocketStream,
    StreamKind,
    Transfer,
)
from ftpkit.server.listings import list_lines, mlsd_lines, nlst_lines, send_lines, split_list_arg
from ftpkit.server.splice import PipeUpload, SpliceStream
from ftpkit.server.storage import Download, StorageError, Upload
from ftpkit.server.xferlog import Direction, TransferRecord

if TYPE_CHECKING:
    from ftpkit.protocol.commands import Command
    from ftpkit.server.session import Session

log = logging.getLogger("ftpkit.server")

SENDFILE_CHUNK = 4 << 20  # bytes per sendfile call: progress for STAT, and a bound for the idle timeout
READ_CHUNK = 1 << 20  # downloads that are not sendfile'd (TYPE A, TLS, object storage) read this much at a time

Body = Callable[[AnyDataStream, Transfer], Awaitable[None]]


class TransferAborted(Exception):
    """The data connection broke or stalled; the text goes into a 426 reply."""


@dataclass(frozen=True, slots=True)
class Ending:
    """What happens to the transfer's file at the end: ``success`` before the 226 (an upload is committed: now its
    bytes are the file), ``failure`` when the transfer did not complete (an upload is aborted, its partial kept)."""

    success: Callable[[], Awaitable[None]]
    failure: Callable[[], Awaitable[None]]


async def _start(s: Session, cmd: Command, path: str, direction: Direction, opening: str, body: Body,
                 ending: Ending | None = None, done_text: str = "Transfer complete.", splice: bool = False) -> None:
    """Take the announced data connection and run the transfer in a task of its own (``splice``: an upload that
    can take its bytes from a pipe)."""
    channel = s.data
    s.data = None
    if channel is None or s.data_must_be_protected():
        if channel is not None:
            channel.close()
        if ending is not None:
            await ending.failure()
        if channel is None:
            await s.reply(425, "Use PORT, EPRT, PASV or EPSV first.")
        else:
            await s.reply(521, "Data connections must be protected on this server: send PBSZ 0 and PROT P.")
        return
    transfer = Transfer(cmd, path, direction, channel)
    s.transfer = transfer
    transfer.task = asyncio.create_task(_run(s, transfer, opening, body, ending, done_text, splice))


def _stream_kind(s: Session, t: Transfer, splice: bool) -> StreamKind:
    if s.prot_private:
        return "transport"  # TLS
    if t.direction == "o":
        return "bare"  # a plain download: sendfile(2) or send(2) on the socket, no transport
    return "splice" if splice and not s.ascii else "transport"


async def _run(s: Session, t: Transfer, opening: str, body: Body, ending: Ending | None, done_text: str,
               splice: bool = False) -> None:
    error = ""
    complete = False
    ended = False
    try:
        try:
            t.stream = await t.channel.open(
                s.cfg.data_accept_timeout if t.channel.mode == "passive" else s.cfg.data_connect_timeout,
                receive_buffer=UPLOAD_BUFFER if t.direction == "i" else SMALL_BUFFER,
                paused=s.prot_private,
                kind=_stream_kind(s, t, splice),
            )
        except DataConnectionError as exc:
            error = str(exc)
            hint = s.shared.events.data_failed(s, t, exc)
            await s.reply(425, f"Cannot open data connection: {exc}" + (f"; {hint}." if hint else "."), to=t.command)
            return
        finally:
            t.channel.close()
        s.shared.events.data_opened(s, t)
        t.started = time.monotonic()
        await s.reply(150, opening, to=t.command)
        if s.prot_private:
            assert s.shared.tls_context is not None
            handshake_failed = False
            try:
                assert isinstance(t.stream, DataStream)
                data_tls = await t.stream.start_tls(s.shared.tls_context, s.cfg.tls_handshake_timeout)
                refusal = s.session_reuse_refusal(data_tls)
            except DataTLSError as exc:
                refusal, handshake_failed = f"TLS failed: {exc}", True
            if refusal is not None:
                error = refusal
                hint = s.shared.events.data_tls_refused(s, t, refusal, handshake_failed)
                await s.reply(522, f"Data connection refused: {refusal}" + (f"; {hint}." if hint else "."),
                              to=t.command)
                return
        try:
            await body(t.stream, t)
            await t.stream.close()
            if ending is not None:  # an upload is the file (committed) before its 226
                await ending.success()
            ended = True
        except StorageError as exc:
            error = exc.reason
            ended = True  # from here on: a cancellation during it must not run the ending twice
            await _give_up(s, t, ending)
            await s.reply(452 if exc.code == 552 else 451, f"{exc.reason}.", to=t.command)
            return
        except (TransferAborted, ConnectionError, OSError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            ended = True
            await _give_up(s, t, ending)  # the partial is gone (or kept) before the client hears of it
            await s.reply(426, f"Data connection closed, transfer aborted: {error}.", to=t.command)
            return
        complete = True
        await s.reply(226, done_text, to=t.command)
    except asyncio.CancelledError:
        error = "aborted"
        raise
    except (ConnectionError, OSError) as exc:  # the control connection broke while a reply was sent
        error = error or f"control connection lost: {exc}"
        log.info("[%s] %s %s: control connection lost: %s", s.id, t.command.verb, t.path, exc)
    finally:
        if not ended:  # cancelled, or failed before the data connection opened
            await _give_up(s, t, ending)
        if s.transfer is t:
            s.transfer = None
        s.transfers += 1
        record = TransferRecord(
            session=s.id, user=s.user, anonymous=bool(s.account and s.account.anonymous), peer=s.peer_ip,
            command=t.command.verb, path=t.path, direction=t.direction, bytes=t.bytes,
            seconds=time.monotonic() - t.started, ascii=s.ascii, mode=t.channel.mode, method=t.channel.method,
            announced=str(t.channel.announced), complete=complete, error=error,
        )
        s.shared.transfer_log.record(record)
        s.shared.events.transfer_done(s, record)


async def _give_up(s: Session, t: Transfer, ending: Ending | None) -> None:
    """A transfer that did not complete: its data connection is dropped and the failure ending runs (an upload
    aborted, its partial kept or removed). After the data connection opened this comes before the 4xx reply, so
    that a client that hears it sees the server's final state."""
    if t.stream is not None:
        t.stream.abort()
    if ending is not None:
        try:
            await ending.failure()
        except StorageError as exc:
            log.error("[%s] %s", s.id, exc.reason)


def _type_name(s: Session) -> str:
    return "ASCII" if s.ascii else "BINARY"


# --- downloads ---------------------------------------------------------------------------------------------

async def _send_file(s: Session, download: Download, stream: AnyDataStream, t: Transfer) -> None:
    assert not isinstance(stream, SpliceStream)  # a download's data connection never splices
    idle = s.cfg.data_idle_timeout
    fh = download.file
    if not s.ascii and fh is not None and isinstance(stream, SocketStream):  # zero-copy: file -> socket
        position, end = download.offset, max(download.offset, download.size)  # the size announced in the 150
        while position < end:
            sent = await stream.sendfile(fh, position, min(SENDFILE_CHUNK, end - position), idle)
            if sent == 0:
                return  # the file shrank meanwhile
            position += sent
            t.bytes += sent
        return
    # Read ahead: the next chunk is read by a worker thread while this one is converted, encrypted and sent.
    convert = ToNetwork() if s.ascii else None
    ahead = asyncio.ensure_future(download.read(READ_CHUNK))
    try:
        while True:
            chunk = await ahead
            if not chunk:
                return
            ahead = asyncio.ensure_future(download.read(READ_CHUNK))
            data = convert.convert(chunk) if convert else chunk
            t.bytes += len(data)
            await stream.write(data, idle)
    finally:
        if not ahead.done():
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)


@command("RETR", arg="required", syntax="RETR path")
async def retr(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    path = s.vpath(cmd.arg)
    offset, s.rest = s.rest, 0
    try:
        download = await s.storage.open_read(path, offset)
    except StorageError as exc:
        s.set_data(None)
        await s.reply(exc.code, f"{exc.reason}.")
        return
    await _start(
        s, cmd, path, "o",
        f"Opening {_type_name(s)} mode data connection for {posixpath.basename(path)} ({download.size} bytes).",
        lambda stream, t: _send_file(s, download, stream, t),
        ending=Ending(download.close, download.close),
    )


# --- uploads -----------------------------------------------------------------------------------------------

async def _receive_file(s: Session, upload: Upload, stream: AnyDataStream, t: Transfer) -> None:
    """Batches of the data connection's two pipes or two reused buffers, each written by a worker thread while
    the kernel fills the other one."""
    idle = s.cfg.data_idle_timeout
    if isinstance(stream, SpliceStream):  # socket -> pipe -> file, no copy through Python
        assert isinstance(upload, PipeUpload)
        while (pipe_batch := await stream.read_batch(idle)) is not None:
            t.bytes = stream.received
            await upload.write_from_pipe(*pipe_batch)
        t.bytes = stream.received
        return
    assert isinstance(stream, DataStream)  # an upload's data connection is never a bare socket
    convert = FromNetwork() if s.ascii else None
    while True:
        batch = await stream.read_batch(idle)
        if batch is None:
            break
        t.bytes = stream.received
        await upload.write(convert.convert(bytes(batch)) if convert else batch)
    if convert:
        tail = convert.flush()
        if tail:
            await upload.write(tail)


async def _upload(s: Session, cmd: Command, path: str, upload: Upload, done_text: str = "Transfer complete.",
                  opening: str | None = None) -> None:
    await _start(
        s, cmd, path, "i",
        opening or f"Ok to send data ({_type_name(s)} mode).",
        lambda stream, t: _receive_file(s, upload, stream, t),
        ending=Ending(upload.commit, upload.abort),
        done_text=done_text,
        splice=isinstance(upload, PipeUpload),
    )


async def _open_upload(s: Session, path: str, offset: int, append: bool) -> Upload | None:
    assert s.storage is not None
    if await _upload_refused(s, path):
        return None
    try:
        return await s.storage.open_upload(path, offset, append)
    except StorageError as exc:
        s.set_data(None)
        await s.reply(exc.code, f"{exc.reason}.")
        return None


async def _upload_refused(s: Session, path: str) -> bool:
    """The pre-upload hooks said no (550 with their reason, or 451 when they did not answer)."""
    verdict = await s.shared.events.pre_upload(s, path)
    if verdict is None:
        return False
    s.set_data(None)
    await s.reply(verdict[0], f"{verdict[1]}.")
    return True


@command("STOR", arg="required", write=True, syntax="STOR path")
async def stor(s: Session, cmd: Command) -> None:
    path = s.vpath(cmd.arg)
    offset, s.rest = s.rest, 0
    upload = await _open_upload(s, path, offset, append=False)
    if upload is not None:
        await _upload(s, cmd, path, upload)


@command("APPE", arg="required", write=True, syntax="APPE path")
async def appe(s: Session, cmd: Command) -> None:
    path = s.vpath(cmd.arg)
    s.rest = 0
    upload = await _open_upload(s, path, 0, append=True)
    if upload is not None:
        await _upload(s, cmd, path, upload)


@command("STOU", write=True, syntax="STOU [name]")
async def stou(s: Session, cmd: Command) -> None:
    assert s.storage is not None
    s.rest = 0
    wanted = s.vpath(cmd.arg) if cmd.arg else posixpath.join(s.cwd, "ftpkit.upload")
    if await _upload_refused(s, wanted):
        return
    directory, stem = posixpath.split(wanted)
    try:
        name, upload = await s.storage.create_unique(directory, stem)
    except StorageError as exc:
        s.set_data(None)
        await s.reply(exc.code, f"{exc.reason}.")
        return
    path = posixpath.join(directory, name)
    # RFC 1123 4.1.2.9: "150 FILE: name"
    await _upload(s, cmd, path, upload, done_text=f"Transfer complete (unique file name: {name}).",
                  opening=f"FILE: {name}")


# --- listings ----------------------------------------------------------------------------------------------

async def _send_listing(s: Session, cmd: Command, lines: AsyncIterator[str]) -> None:
    async def body(stream: AnyDataStream, t: Transfer) -> None:
        await send_lines(lines, stream, t, s.cfg.data_idle_timeout)

    await _start(s, cmd, s.cwd, "o", "Here comes the directory listing.", body,
                 done_text="Directory send OK.")


async def _listing(s: Session, cmd: Command, make: Callable[..., Awaitable[AsyncIterator[str]]]) -> None:
    try:
        lines = await make(s, split_list_arg(cmd.arg))
    except StorageError as exc:
        s.set_data(None)
        await s.reply(exc.code, f"{exc.reason}.")
        return
    await _send_listing(s, cmd, lines)


@command("LIST", syntax="LIST [-options] [path]")
async def list_(s: Session, cmd: Command) -> None:
    await _listing(s, cmd, list_lines)


@command("NLST", syntax="NLST [path]")
async def nlst(s: Session, cmd: Command) -> None:
    await _listing(s, cmd, nlst_lines)


@command("MLSD", syntax="MLSD [path]")
async def mlsd(s: Session, cmd: Command) -> None:
    await _listing(s, cmd, lambda s, arg: mlsd_lines(s, cmd.arg))


# --- control of transfers ----------------------------------------------------------------------------------

@command("REST", arg="required", syntax="REST offset")
async def rest(s: Session, cmd: Command) -> None:
    text = (cmd.arg or "").strip()
    if not text.isdigit() or len(text) > 18:
        await s.reply(501, f"REST needs a byte offset, not {text[:20]!r}.")
        return
    s.rest = int(text)
    await s.reply(350, f"Restarting at {s.rest}. Send STOR or RETR to start the transfer.")


@command("ABOR", login=False, arg="none")
async def abor(s: Session, cmd: Command) -> None:
    transfer = s.transfer
    if transfer is None:
        s.set_data(None)
        await s.reply(225, "No transfer to abort.")
        return
    await s.abort_transfer()
    if s.conv.transfer is transfer.command:
        await s.reply(426, "Connection closed; transfer aborted.", to=transfer.command)
    s.transfer = None
    await s.reply(226, "ABOR successful.")


@command("ALLO", syntax="ALLO bytes")
async def allo(s: Session, cmd: Command) -> None:
    await s.reply(202, "ALLO not needed: storage is allocated as the data arrives.")
