"""The one-shot client commands: ``ftpkit get put ls mkdir rm rmdir mv mirror``.

What only some commands need (mirroring, --verify's digests) is imported when used: every ``ftpkit get`` pays for
its imports at start.
"""

from __future__ import annotations

import contextlib
import posixpath
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ftpkit.cli.common import build_options, client_options, progress_bar, run, say, showing_progress, url_arg
from ftpkit.client.errors import ReplyError
from ftpkit.client.options import ClientOptions
from ftpkit.client.session import open_session, with_retries
from ftpkit.client.url import FTPURL

if TYPE_CHECKING:
    from ftpkit.client.core import FTPClient
    from ftpkit.client.verify import Verifier

VERIFY_HELP = ("after the transfer, compare the server's digest (HASH, else XSHA256/XSHA1/XMD5/XCRC) with this "
               "copy's; sizes when the server has none")


def _verifier(verify: bool, options: ClientOptions, what: str) -> Verifier | None:
    if not verify:
        return None
    if options.ascii:
        raise click.UsageError(f"--verify compares bytes: it cannot check {what} with --ascii (line endings change)")
    from ftpkit.client.verify import Verifier

    return Verifier(options.transcript)


async def _with_session(url: FTPURL, options: ClientOptions, netrc_file: str | None, work: Any) -> Any:
    async def attempt(n: int) -> Any:
        ftp = await open_session(url, options, netrc_file)
        try:
            result = await work(ftp, n)
        except BaseException:
            await ftp.close()
            raise
        await ftp.quit()
        return result

    return await with_retries(attempt, options)


@click.command("get")
@click.argument("url")
@click.option("-o", "--output", metavar="PATH", help="local file (default: the remote name here; - for stdout)")
@click.option("-c", "--continue", "resume", is_flag=True, help="resume a partial download (REST)")
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@client_options
def get_command(url: str, output: str | None, resume: bool, verify: bool, **kw: Any) -> None:
    """Download the file at URL (ftp://user:pass@host:port/path)."""
    target = url_arg(url, kw.pop("password_stdin"))
    netrc_file = kw.pop("netrc_file")
    options = build_options(kw, target)
    if not target.path or target.path.endswith("/"):
        raise click.UsageError(f"{url!r} names no file")
    name = posixpath.basename(target.path)
    verifier = _verifier(verify, options, "a download")

    async def work(ftp: FTPClient, attempt: int) -> int:
        if output == "-":
            return await _to_stdout(ftp, target.path, verifier, options.ascii)
        local = Path(output or name)
        total = None
        if showing_progress():
            with contextlib.suppress(ReplyError):
                total = await ftp.size(target.path)
        with progress_bar(name, total) as progress:
            count = await ftp.download(target.path, local, resume=resume or (attempt > 0 and resume),
                                       progress=progress)
        if verifier is not None:
            from ftpkit.client.verify import local_file

            await verifier.check(ftp, target.path, str(local), local.stat().st_size, local_file(local))
        return count

    run(_with_session(target, options, netrc_file, work))


async def _to_stdout(ftp: FTPClient, path: str, verifier: Verifier | None, ascii_mode: bool) -> int:
    """A download to standard output: written from one buffer (spliced when stdout is a regular file); through
    a digest when --verify, converted with --ascii."""
    out = sys.stdout.buffer
    if verifier is None and not ascii_mode:
        count = await ftp.retrieve_file(path, out)
        out.flush()
        return count
    from ftpkit.client.verify import StreamDigest

    stream = StreamDigest(await verifier.algorithm(ftp) if verifier else None)
    count = await ftp.retrieve(path, stream.wrap(out.write))
    out.flush()
    if verifier is not None:
        await verifier.check(ftp, path, "standard output", stream.size, stream.digest)
    return count


@click.command("put")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("url")
@click.option("-c", "--continue", "resume", is_flag=True, help="resume a partial upload (SIZE, then REST + STOR)")
@click.option("--append", is_flag=True, help="append to the remote file (APPE)")
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@client_options
def put_command(file: str, url: str, resume: bool, append: bool, verify: bool, **kw: Any) -> None:
    """Upload FILE to URL (a directory URL ending in / keeps the file's name)."""
    target = url_arg(url, kw.pop("password_stdin"))
    netrc_file = kw.pop("netrc_file")
    options = build_options(kw, target)
    local = Path(file)
    remote = target.path if target.path and not target.path.endswith("/") else target.path + local.name
    if verify and append:
        raise click.UsageError("--verify cannot check --append (the remote file is more than FILE)")
    verifier = _verifier(verify, options, "an upload")

    async def work(ftp: FTPClient, attempt: int) -> int:
        with progress_bar(local.name, local.stat().st_size) as progress:
            if append:
                with local.open("rb") as fh:
                    return await ftp.store(remote, fh, append=True, progress=progress)
            count = await ftp.upload(local, remote, resume=resume, progress=progress)
        if verifier is not None:
            from ftpkit.client.verify import local_file

            await verifier.check(ftp, remote, str(local), local.stat().st_size, local_file(local))
        return count

    run(_with_session(target, options, netrc_file, work))


@click.command("ls")
@click.argument("url")
@click.option("-l", "--long", "long_format", is_flag=True, help="the server's long listing (LIST)")
@client_options
def ls_command(url: str, long_format: bool, **kw: Any) -> None:
    """List the directory at URL."""
    target = url_arg(url, kw.pop("password_stdin"))
    netrc_file = kw.pop("netrc_file")
    options = build_options(kw, target)

    async def work(ftp: FTPClient, attempt: int) -> None:
        if long_format:
            text = await ftp.listing_text(target.path, "LIST")
            sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        else:
            for entry in await ftp.listdir(target.path):
                sys.stdout.write(entry.name + ("/" if entry.is_dir else "") + "\n")
        sys.stdout.flush()

    run(_with_session(target, options, netrc_file, work))


def _simple(name: str, doc: str, action: Any, extra_arg: str | None = None) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("url")
    @client_options
    def command(url: str, **kw: Any) -> None:
        target = url_arg(url, kw.pop("password_stdin"))
        netrc_file = kw.pop("netrc_file")
        extra = kw.pop(extra_arg) if extra_arg else None
        options = build_options(kw, target)
        if not target.path:
            raise click.UsageError(f"{url!r} names no path")

        async def work(ftp: FTPClient, attempt: int) -> None:
            reply = await action(ftp, target.path, extra)
            say(f"{reply.code} {reply.text}")

        run(_with_session(target, options, netrc_file, work))

    if extra_arg:
        command = click.argument(extra_arg)(command)
    return command


mkdir_command = _simple("mkdir", "Create the directory at URL.", lambda ftp, p, _: ftp.mkdir(p))
rm_command = _simple("rm", "Delete the file at URL.", lambda ftp, p, _: ftp.delete(p))
rmdir_command = _simple("rmdir", "Remove the (empty) directory at URL.", lambda ftp, p, _: ftp.rmdir(p))
mv_command = _simple(
    "mv", "Rename the file at URL to NEW_NAME (relative to the same directory, or absolute).",
    lambda ftp, p, new: ftp.rename(p, new if new.startswith("/") else posixpath.join(posixpath.dirname(p), new)),
    extra_arg="new_name")


@click.command("mirror")
@click.argument("url")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("-R", "--reverse", is_flag=True, help="upload DIRECTORY to URL instead")
@click.option("--delete", is_flag=True, help="remove what the source lacks")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1, 32), help="transfers at once")
@click.option("--verify", is_flag=True, help=VERIFY_HELP + "; a file that differs is transferred once more")
@client_options
def mirror_command(url: str, directory: str, reverse: bool, delete: bool, parallel: int, verify: bool,
                   **kw: Any) -> None:
    """Mirror the remote directory at URL into DIRECTORY (or the other way with --reverse); only files that
    changed (size or time) are transferred, and times are kept (MFMT on upload where the server offers it)."""
    target = url_arg(url, kw.pop("password_stdin"))
    netrc_file = kw.pop("netrc_file")
    options = build_options(kw, target)
    remote = target.path.rstrip("/") or "."
    verifier = _verifier(verify, options, "a mirror")

    from ftpkit.client.mirror import mirror_down, mirror_up

    async def work(ftp: FTPClient, attempt: int) -> None:
        async def factory() -> FTPClient:
            return await open_session(target, options, netrc_file)

        if reverse:
            result = await mirror_up(ftp, factory, Path(directory), remote, delete, parallel, verifier)
        else:
            result = await mirror_down(ftp, factory, remote, Path(directory), delete, parallel, verifier)
        say(f"mirror: {result.summary()}")
        for name, error in result.failed:
            say(f"ftpkit: {name}: {error}")
        if result.failed:
            sys.exit(1)

    run(_with_session(target, options, netrc_file, work))

