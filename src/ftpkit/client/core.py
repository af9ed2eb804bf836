"""The asyncio FTP client. ``async with FTPClient(options) as ftp: await ftp.connect(host); await ftp.login()``.

The codecs of digests, listings and times are imported by the methods that use them: a plain ``ftpkit get`` or
``put`` does not load them at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import posixpath
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ftpkit.client import data as dc
from ftpkit.client.control import Control
from ftpkit.client.errors import ControlConnectionError, DataConnectionError, LocalError, NotOfferedError, ReplyError
from ftpkit.client.options import ClientOptions
from ftpkit.protocol.commands import Command
from ftpkit.protocol.errors import ProtocolError
from ftpkit.protocol.features import parse_features
from ftpkit.protocol.pathname import parse_257_path
from ftpkit.protocol.replies import Reply

if TYPE_CHECKING:
    from ftpkit.protocol.hashes import HashMethod, HashResult
    from ftpkit.protocol.listparse import Entry

Progress = Callable[[int], None]
DIGEST_TIMEOUT = 300.0
"""Seconds a HASH or X digest reply may take: the server reads the whole file first (4 GiB at 50 MB/s: 80 s)."""


class FTPClient:
    def __init__(self, options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        self.control = Control(self.options)
        self.modes = dc.SessionModes()
        self.greeting: Reply | None = None
        self.user: str | None = None
        self._features: dict[str, str] | None = None
        self._type: str | None = None
        self._prot_private = False
        self._hash_algorithm: str | None = None  # what OPTS HASH selected in this session

    # --- session -------------------------------------------------------------------------------------------
    async def connect(self, host: str, port: int = 21) -> Reply:
        reply = await self.control.open(host, port)
        while reply.code == 120:  # "service ready in n minutes"
            reply = await self.control.read_reply()
        self.greeting = reply
        if reply.code == 421:
            raise ControlConnectionError(f"the server refused the session: 421 {reply.text}")
        if reply.code != 220:
            err = ControlConnectionError(f"unexpected greeting {reply.code} {reply.text}: is this an FTP server?")
            err.transient = False
            raise err
        if self.options.tls in ("explicit", "optional"):
            await self._auth_tls()
        return reply

    async def _auth_tls(self) -> None:
        reply = await self.control.command("AUTH", "TLS")
        if reply.code != 234:
            if self.options.tls == "optional":
                self.options.transcript("!!!", f"the server refused AUTH TLS ({reply.code} {reply.text}); going on "
                                               "in clear (--tls-optional): the password travels unencrypted")
                return
            raise ReplyError("AUTH TLS", reply, hint="The server does not offer FTPS (explicit TLS) here.")
        await self.control.start_tls()

    @property
    def protected(self) -> bool:
        """Whether data connections use TLS (PROT P)."""
        return self._prot_private

    async def login(self, user: str = "anonymous", password: str = "ftpkit@") -> Reply:
        reply = await self.control.command("USER", user)
        if reply.code == 331:
            reply = await self.control.command("PASS", password)
        if reply.code not in (230, 202):
            needs_tls = "TLS" in reply.text.upper() or "SSL" in reply.text.upper()
            hint = "The server wants FTPS: use --tls." if needs_tls and not self.control.encrypted else \
                "Check the user name and password."
            raise ReplyError("login", reply, hint=hint)
        self.user = user
        if self.control.encrypted:
            await self._ok("PBSZ", "0", codes=(200,))
            level = "C" if self.options.clear_data else "P"
            await self._ok("PROT", level, codes=(200,))
            self._prot_private = level == "P"
            if self.options.ccc:
                await self._ok("CCC", codes=(200,))
                await self.control.stop_tls()
        features = await self.features()
        if "UTF8" in features and self.options.encoding.replace("-", "").lower() == "utf8":
            await self.control.command("OPTS", "UTF8 ON")  # some servers need it; a refusal changes nothing
        return reply

    async def features(self) -> dict[str, str]:
        """FEAT as {feature: parameters}, e.g. {"MLST": "type*;size*;", "UTF8": ""} (empty if refused)."""
        if self._features is None:
            self._features = parse_features(await self.control.command("FEAT"))
        return self._features

    async def quit(self) -> None:
        with contextlib.suppress(ControlConnectionError):
            await self.control.command("QUIT")
        await self.control.close()

    async def close(self) -> None:
        await self.control.close()

    async def __aenter__(self) -> FTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.control.writer is not None:
            if exc[0] is None:
                await self.quit()
            else:
                await self.close()

    # --- simple commands ------------------------------------------------------------------------------------
    async def raw(self, line: str) -> Reply:
        """Send a command line as typed (``quote``) and return the final reply."""
        verb, _, arg = line.strip().partition(" ")
        return await self.control.command(verb, arg or None)

    async def _ok(self, verb: str, arg: str | None = None, codes: tuple[int, ...] = (200, 250)) -> Reply:
        reply = await self.control.command(verb, arg)
        if reply.code not in codes:
            raise ReplyError(f"{verb} {arg}" if arg else verb, reply)
        return reply

    async def pwd(self) -> str:
        reply = await self._ok("PWD", codes=(257,))
        try:
            return parse_257_path(reply.text)
        except ProtocolError:
            raise ReplyError("PWD", reply, hint="The reply names no directory in quotes (RFC 959).") from None

    async def cwd(self, path: str) -> Reply:
        return await self._ok("CWD", path)

    async def cdup(self) -> Reply:
        return await self._ok("CDUP", codes=(200, 250))

    async def mkdir(self, path: str) -> Reply:
        return await self._ok("MKD", path, codes=(257, 250))

    async def rmdir(self, path: str) -> Reply:
        return await self._ok("RMD", path)

    async def delete(self, path: str) -> Reply:
        return await self._ok("DELE", path)

    async def rename(self, source: str, target: str) -> Reply:
        await self._ok("RNFR", source, codes=(350,))
        return await self._ok("RNTO", target)

    async def type(self, ascii_mode: bool) -> None:
        wanted = "A" if ascii_mode else "I"
        if self._type != wanted:
            await self._ok("TYPE", wanted)
            self._type = wanted

    async def size(self, path: str) -> int:
        await self.type(False)
        reply = await self._ok("SIZE", path, codes=(213,))
        try:
            return int(reply.text.strip())
        except ValueError:
            raise ReplyError(f"SIZE {path}", reply) from None

    async def mdtm(self, path: str) -> float:
        from ftpkit.protocol.listing import parse_mlst_time

        reply = await self._ok("MDTM", path, codes=(213,))
        try:
            return parse_mlst_time(reply.text.strip())
        except ValueError:
            raise ReplyError(f"MDTM {path}", reply) from None

    async def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory: MLST when offered, else CWD there and back."""
        if "MLST" in await self.features():
            entry = await self.stat(path)
            return entry is not None and entry.is_dir
        here = await self.pwd()
        reply = await self.control.command("CWD", path)
        if reply.code != 250:
            return False
        await self._ok("CWD", here)
        return True

    async def stat(self, path: str) -> Entry | None:
        """One entry's facts (MLST when offered), or ``None`` when it does not exist."""
        from ftpkit.protocol.listparse import Entry, parse_mlsx_line

        if "MLST" in await self.features():
            reply = await self.control.command("MLST", path)
            if reply.code != 250:
                return None
            for line in reply.lines[1:]:
                if line.startswith(" "):
                    entry = parse_mlsx_line(line[1:])
                    if entry is not None:
                        return Entry(posixpath.basename(entry.name.rstrip("/")) or entry.name, entry.type,
                                     entry.size, entry.mtime, perm=entry.perm, raw=entry.raw)
            return None
        try:
            size = await self.size(path)
        except ReplyError:
            return None
        mtime = None
        with contextlib.suppress(ReplyError):
            mtime = await self.mdtm(path)
        return Entry(posixpath.basename(path), "file", size, mtime)

    # --- integrity and fidelity: digests, times, modes, free space ------------------------------------------
    async def hash_method(self, algorithm: str | None = None) -> HashMethod | None:
        """How this server gives digests (HASH with the best algorithm both sides have, else an X command), or
        ``None`` when it gives none; with ``algorithm``, that algorithm only."""
        from ftpkit.protocol.hashes import choose_method

        return choose_method(await self.features(), algorithm)

    async def remote_hash(self, path: str, algorithm: str | None = None) -> HashResult:
        """The server's digest of a file (``HASH``, after ``OPTS HASH`` when another algorithm is selected; else
        ``XSHA256``/``XSHA512``/``XSHA1``/``XMD5``/``XCRC``). :class:`NotOfferedError` when the server has none."""
        from ftpkit.protocol.hashes import HashResult, parse_hash_reply, parse_x_reply

        method = await self.hash_method(algorithm)
        if method is None:
            wanted = f"{algorithm} digests" if algorithm else "HASH (nor XSHA256, XSHA1, XMD5, XCRC)"
            raise NotOfferedError(f"the server offers no {wanted}")
        if method.command != "HASH":
            reply = await self._slow_command(method.command, path)
            try:
                return HashResult(method.algorithm, None, None, parse_x_reply(reply, method.algorithm), path)
            except ProtocolError as exc:
                raise ReplyError(f"{method.command} {path}", reply, hint=str(exc) if reply.is_success else "") \
                    from None
        if method.select and self._hash_algorithm != method.algorithm:
            await self._ok("OPTS", f"HASH {method.algorithm}", codes=(200,))
            self._hash_algorithm = method.algorithm
        reply = await self._slow_command("HASH", path)
        try:
            return parse_hash_reply(reply)
        except ProtocolError as exc:
            raise ReplyError(f"HASH {path}", reply, hint=str(exc) if reply.is_success else "") from None

    async def _slow_command(self, verb: str, arg: str) -> Reply:
        """A command whose reply takes as long as the server needs to read a file (a digest of gigabytes): its
        reply is awaited for at least DIGEST_TIMEOUT seconds, not just --timeout."""
        await self.control.send(Command(verb, arg))
        reply = await self.control.read_reply(timeout=max(self.options.timeout, DIGEST_TIMEOUT))
        while reply.is_preliminary:
            reply = await self.control.read_reply(timeout=max(self.options.timeout, DIGEST_TIMEOUT))
        return reply

    async def set_mtime(self, path: str, mtime: float) -> float:
        """``MFMT``: set a remote file's modification time (whole seconds, UTC: some servers take no fraction);
        returns the time the server says it set. :class:`NotOfferedError` without MFMT in FEAT."""
        from ftpkit.protocol.modify import format_time_val, parse_mfmt_reply

        if "MFMT" not in await self.features():
            raise NotOfferedError("the server offers no MFMT (setting modification times)")
        text = format_time_val(mtime)
        reply = await self._ok("MFMT", f"{text} {path}", codes=(213,))
        try:
            done = parse_mfmt_reply(reply)
        except ProtocolError as exc:
            raise ReplyError(f"MFMT {path}", reply, hint=str(exc)) from None
        return done if done is not None else float(int(mtime // 1))  # pure-ftpd: "213 UTIME OK"

    async def chmod(self, path: str, mode: int) -> Reply:
        """``SITE CHMOD``: set permission bits (an octal mode such as ``0o644``)."""
        return await self._ok("SITE", f"CHMOD {mode:03o} {path}", codes=(200,))

    async def available(self, path: str = "") -> int:
        """``AVBL``: bytes free for uploads in a remote directory (the current one by default)."""
        from ftpkit.protocol.modify import parse_avbl_reply

        reply = await self.control.command("AVBL", path or None)
        if reply.code in (500, 502) and "AVBL" not in await self.features():
            raise ReplyError("AVBL", reply, hint="The server does not offer AVBL (free space).")
        try:
            return parse_avbl_reply(reply)
        except ProtocolError:
            raise ReplyError(f"AVBL {path}".rstrip(), reply) from None

    # --- data transfers -------------------------------------------------------------------------------------
    async def _transfer(self, command: Command, work: Callable[[socket.socket], int | dc.Moved], rest: int = 0,
                        ascii_mode: bool | None = None) -> tuple[int, Reply]:
        """Run one transfer command over a new data connection, with --fallback to the other mode."""
        await self.type(self.options.ascii if ascii_mode is None else ascii_mode)
        modes = [self.options.passive]
        if self.options.fallback:
            modes.append(not self.options.passive)
        for attempt, passive in enumerate(modes):
            try:
                return await self._transfer_once(passive, command, work, rest)
            except DataConnectionError as exc:
                if attempt + 1 < len(modes) and not exc.opened:
                    other = "active" if passive else "passive"
                    self.options.transcript("!!!", f"{exc.summary()}: retrying {command.verb} in {other} mode "
                                                   "(--fallback)")
                    continue
                raise
        raise AssertionError("unreachable")

    async def _transfer_once(self, passive: bool, command: Command, work: Callable[[socket.socket], int | dc.Moved],
                             rest: int) -> tuple[int, Reply]:
        timeout = self.options.timeout
        control = self.control
        announce = dc.announce_passive if passive else dc.announce_active
        plan = await announce(control, self.modes, self.options)
        for note in plan.notes:
            self.options.transcript("!!!", note)
        sock = None
        try:
            if passive:
                sock = await dc.connect_passive(plan, timeout)
            if rest:
                reply = await control.command("REST", str(rest))
                if reply.code != 350:
                    raise ReplyError(f"REST {rest}", reply, hint="The server cannot resume; try without --continue.")
            await control.send(command)
            if passive:
                first = await control.read_reply()
            else:
                sock, first = await self._await_active(plan, timeout)
            if not first.is_preliminary:
                if first.code in (425, 426):
                    raise DataConnectionError(plan.mode, plan.method, f"the server could not open it for "
                                              f"{command.verb} ({plan.describe()})", first)
                raise ReplyError(str(Command(command.verb, command.arg)), first)
            if sock is None:  # active: 150 came before the server connected
                try:
                    sock = await dc.accept_active(plan, timeout)
                except DataConnectionError:
                    with contextlib.suppress(ControlConnectionError):
                        await control.read_reply()  # the server's 425 once it gives up
                    raise
            self.options.transcript("===", dc.describe_connection(plan, sock))
            if self._prot_private:
                sock = await self._protect(plan, sock)
            started = time.monotonic()
            try:
                moved = await asyncio.to_thread(work, sock)
            except (OSError, TimeoutError) as exc:
                final = None
                with contextlib.suppress(ControlConnectionError):
                    final = await control.read_reply()
                raise DataConnectionError(plan.mode, plan.method, f"broke during {command.verb}: {exc}", final,
                                          hint="Try again (with --continue to resume).", opened=True) from None
            sock = None
            count, how = (moved, "") if isinstance(moved, int) else (moved.nbytes, f", {moved.how}")
            try:
                final = await control.read_reply(timeout=max(timeout, 60.0))
            except ControlConnectionError as exc:
                raise ControlConnectionError(f"{exc} after {count} bytes of {command.verb} over the data connection"
                                             " (--continue resumes a download)") from None
            elapsed = time.monotonic() - started
            if not final.is_success:
                if final.code in (426,):
                    raise DataConnectionError(plan.mode, plan.method, f"{command.verb} broke off", final,
                                              hint="Try again (with --continue to resume).", opened=True)
                raise ReplyError(str(command), final)
            rate = count / elapsed / 1e6 if elapsed > 0 else 0.0
            self.options.transcript("===", f"{count} bytes in {elapsed:.3f} s ({rate:.1f} MB/s{how})")
            return count, final
        finally:
            if sock is not None:
                sock.close()
            if plan.listener is not None:
                plan.listener.close()

    async def _protect(self, plan: dc.Plan, sock: socket.socket) -> ssl.SSLSocket:
        """TLS on the data connection (this client is the TLS client in both modes), resuming the control
        connection's session so that servers that require reuse accept it."""
        try:
            tls = await asyncio.to_thread(dc.wrap_tls, sock, self.control.tls_context(), self.control.host,
                                          self.control.tls_session(), self.options.timeout)
        except (OSError, ValueError) as exc:
            final = None
            with contextlib.suppress(ControlConnectionError):
                final = await self.control.read_reply()
            raise DataConnectionError(plan.mode, plan.method, f"TLS on the data connection failed: {exc}", final,
                                      hint="The server may require TLS session reuse, or the certificate differs.",
                                      opened=True) from None
        reused = "resumed the control connection's session" if tls.session_reused else "new session"
        self.options.transcript("===", f"data connection TLS {tls.version()} ({reused})")
        return tls

    async def _await_active(self, plan: dc.Plan, timeout: float) -> tuple[socket.socket | None, Reply]:
        """After the transfer command in active mode: the server connects, or replies first (e.g. 425)."""
        accept = asyncio.ensure_future(dc.accept_active(plan, timeout))
        reply_task = asyncio.ensure_future(self.control.read_reply())
        done, _ = await asyncio.wait({accept, reply_task}, return_when=asyncio.FIRST_COMPLETED)
        if reply_task in done:
            reply = reply_task.result()
            if accept.done() and not accept.cancelled() and accept.exception() is None:
                return accept.result(), reply
            if reply.is_preliminary:
                try:
                    return await accept, reply
                except DataConnectionError:
                    with contextlib.suppress(ControlConnectionError):
                        await self.control.read_reply()
                    raise
            accept.cancel()
            return None, reply
        try:
            sock = accept.result()
        except DataConnectionError:
            reply_task.cancel()
            raise
        return sock, await reply_task

    async def retrieve(self, path: str, sink: Callable[[bytes], object], offset: int = 0,
                       progress: Progress | None = None, ascii_mode: bool | None = None) -> int:
        """Download ``path`` into ``sink`` (called in a worker thread with each chunk); returns bytes received."""
        mode = self.options.ascii if ascii_mode is None else ascii_mode
        count, _ = await self._transfer(
            Command("RETR", path),
            lambda sock: dc.receive(sock, sink, mode, progress, self.options.timeout),
            rest=offset, ascii_mode=mode)
        return count

    async def store(self, path: str, source: BinaryIO, offset: int = 0, append: bool = False,
                    progress: Progress | None = None, ascii_mode: bool | None = None) -> int:
        """Upload ``source`` (read in a worker thread) to ``path``; returns bytes sent."""
        mode = self.options.ascii if ascii_mode is None else ascii_mode
        verb = "APPE" if append else "STOR"
        count, _ = await self._transfer(
            Command(verb, path),
            lambda sock: dc.send(sock, source, mode, progress, self.options.timeout),
            rest=offset if not append else 0, ascii_mode=mode)
        return count

    async def read_bytes(self, path: str) -> bytes:
        chunks: list[bytes] = []
        await self.retrieve(path, chunks.append)
        return b"".join(chunks)

    async def write_bytes(self, path: str, data: bytes) -> int:
        return await self.store(path, io.BytesIO(data))

    async def download(self, remote: str, local: str | os.PathLike[str], resume: bool = False,
                       progress: Progress | None = None) -> int:
        """Download to a local file; with ``resume`` continue a partial file (REST). Binary downloads into a
        regular file are spliced in the kernel where the system can (see :func:`ftpkit.client.data.receive_file`)."""
        local = Path(local)
        offset = local.stat().st_size if resume and local.exists() else 0
        if offset and not self.options.ascii:
            with contextlib.suppress(ReplyError):
                if await self.size(remote) == offset:
                    return 0  # already complete
        created = not local.exists()
        try:
            fh = _open_for_writing(local, offset)
        except OSError as exc:
            raise LocalError(f"cannot write {local}: {exc.strerror}") from None
        try:
            if self.options.ascii:
                return await self.retrieve(remote, fh.write, offset=offset, progress=progress)
            return await self.retrieve_file(remote, fh, offset=offset, progress=progress)
        except BaseException:
            if created and fh.tell() == 0:  # nothing arrived: leave no empty file behind
                fh.close()
                local.unlink(missing_ok=True)
            raise
        finally:
            await asyncio.to_thread(fh.close)

    async def retrieve_file(self, path: str, out: BinaryIO, offset: int = 0, progress: Progress | None = None) -> int:
        """Download ``path`` in binary (TYPE I) into the file ``out`` at its position (written in a worker
        thread, spliced when ``out`` is a regular file on a plain connection); returns bytes received."""
        count, _ = await self._transfer(
            Command("RETR", path),
            lambda sock: dc.receive_file(sock, out, progress, self.options.timeout),
            rest=offset, ascii_mode=False)
        return count

    async def upload(self, local: str | os.PathLike[str], remote: str, resume: bool = False,
                     progress: Progress | None = None) -> int:
        """Upload a local file; with ``resume`` continue where the remote file ends (SIZE, then REST+STOR)."""
        local = Path(local)
        try:
            fh = open(local, "rb")  # noqa: SIM115
        except OSError as exc:
            raise LocalError(f"cannot read {local}: {exc.strerror}") from None
        try:
            offset = 0
            if resume:
                with contextlib.suppress(ReplyError):
                    offset = await self.size(remote)
                if offset >= os.fstat(fh.fileno()).st_size:
                    return 0
                fh.seek(offset)
            return await self.store(remote, fh, offset=offset, progress=progress)
        finally:
            fh.close()

    # --- listings -------------------------------------------------------------------------------------------
    async def listing_text(self, path: str = "", verb: str = "LIST") -> str:
        chunks: list[bytes] = []
        await self._transfer(Command(verb, path or None),
                             lambda sock: dc.receive(sock, chunks.append, True, None, self.options.timeout),
                             ascii_mode=True)
        return b"".join(chunks).decode(self.options.encoding, "surrogateescape")

    async def listdir(self, path: str = "") -> list[Entry]:
        """Entries of a directory: MLSD when the server offers it, else LIST (Unix or DOS format) parsed."""
        from ftpkit.protocol.listparse import parse_listing

        if "MLST" in await self.features():
            text = await self.listing_text(path, "MLSD")
            return parse_listing(text, time.time(), mlsd=True)
        return parse_listing(await self.listing_text(path, "LIST"), time.time())

    async def nlst(self, path: str = "") -> list[str]:
        text = await self.listing_text(path, "NLST")
        return [line for line in text.splitlines() if line]


def _open_for_writing(local: Path, offset: int) -> BinaryIO:
    """``local`` for a download: truncated, or kept and positioned at ``offset`` to resume (not O_APPEND: splice(2)
    cannot write to an appending file)."""
    if not offset:
        return open(local, "wb")
    fd = os.open(local, os.O_WRONLY)
    try:
        fh = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise
    fh.seek(offset)
    return fh
