"""What the client commands share: the data-connection and session flags, the transcript printer, progress
bars on a terminal, and running an operation with one clear line on failure (exit 1)."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from ftpkit.client.errors import FTPError
from ftpkit.client.options import ClientOptions, ClientTLSMode
from ftpkit.client.url import FTPURL, URLError, parse_url
from ftpkit.protocol.portrange import PortRangeError, parse_port_range

T = TypeVar("T")


def say(text: str) -> None:
    """One line on stderr (plain: rich is loaded only for progress bars on a terminal, to keep start-up quick)."""
    click.echo(text, err=True)


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The flags every client command takes (``--passive`` / ``--active`` and friends)."""
    options = [
        click.option("--passive/--active", "passive", default=True,
                     help="data connection mode: passive (EPSV, then PASV; default) or active (EPRT, then PORT)"),
        click.option("--no-epsv", is_flag=True, help="passive: use PASV only"),
        click.option("--no-eprt", is_flag=True, help="active: use PORT only"),
        click.option("--active-address", metavar="ADDR", help="active: announce ADDR (behind NAT with a port forward)"),
        click.option("--active-ports", metavar="LOW-HIGH", help="active: listen on a port from this range"),
        click.option("--fallback", is_flag=True, help="retry a transfer once in the other mode if its data connection "
                                                      "cannot be opened"),
        click.option("--trust-pasv-address", is_flag=True,
                     help="connect to the address in 227 even when it differs from the server's"),
        click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="seconds for connect, each reply and a stalled data connection"),
        click.option("--retries", default=0, show_default=True, type=click.IntRange(0, 100),
                     help="retries with backoff for transient failures (4xx, reset); 5xx is not retried"),
        click.option("--encoding", default="utf-8", show_default=True,
                     help="file names and replies: utf-8, shift_jis, cp932, euc-jp ..."),
        click.option("--ascii", is_flag=True, help="TYPE A: convert line endings (default: binary)"),
        click.option("--password-stdin", is_flag=True, help="read the password from standard input"),
        click.option("--netrc-file", metavar="FILE", help="credentials file (default ~/.netrc)"),
        click.option("--tls", "tls_explicit", is_flag=True, help="FTPS: AUTH TLS, required (ftps://: implicit)"),
        click.option("--tls-optional", is_flag=True, help="FTPS when the server offers it, else clear (said once)"),
        click.option("--clear-data", is_flag=True, help="FTPS: PROT C, data connections in clear"),
        click.option("--ccc", is_flag=True, help="FTPS: back to a clear control connection after login (NAT helpers)"),
        click.option("--ca-file", metavar="PEM", help="trust this CA (or self-signed certificate) for FTPS"),
        click.option("--insecure", is_flag=True, help="FTPS: do not verify the server's certificate (warned)"),
        click.option("-v", "--verbose", is_flag=True, help="print the control conversation and the data connections"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def parse_range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        return parse_port_range(text)
    except PortRangeError as exc:
        raise click.UsageError(f"active_ports: {exc}") from None


def transcript_printer(verbose: bool) -> Callable[[str, str], None]:
    def show(direction: str, text: str) -> None:
        if direction == "!!!":
            say(f"ftpkit: note: {text}")
        elif verbose:
            say(f"{direction} {text}")

    return show


def build_options(kw: dict[str, Any], url: FTPURL | None = None) -> ClientOptions:
    tls: ClientTLSMode = "implicit" if url is not None and url.scheme == "ftps" else (
        "explicit" if kw.pop("tls_explicit") else "optional" if kw.pop("tls_optional") else "off")
    kw.pop("tls_explicit", None)
    kw.pop("tls_optional", None)
    insecure = kw.pop("insecure")
    if insecure and tls != "off":
        say("ftpkit: warning: --insecure: the server's certificate is not checked; anyone in the path can "
                     "read and change this session")
    try:
        return ClientOptions(
            tls=tls,
            verify=not insecure,
            ca_file=kw.pop("ca_file"),
            clear_data=kw.pop("clear_data"),
            ccc=kw.pop("ccc"),
            passive=kw.pop("passive"),
            epsv=not kw.pop("no_epsv"),
            eprt=not kw.pop("no_eprt"),
            active_address=kw.pop("active_address"),
            active_ports=parse_range(kw.pop("active_ports")),
            fallback=kw.pop("fallback"),
            trust_pasv_address=kw.pop("trust_pasv_address"),
            timeout=kw.pop("timeout"),
            retries=kw.pop("retries"),
            encoding=kw.pop("encoding"),
            ascii=kw.pop("ascii"),
            transcript=transcript_printer(kw.pop("verbose")),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def url_arg(text: str, password_stdin: bool) -> FTPURL:
    try:
        url = parse_url(text)
    except URLError as exc:
        raise click.UsageError(str(exc)) from None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        url = url.with_credentials(url.user or "anonymous", password)
    return url


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an operation; an FTP failure is one line on stderr and exit code 1."""
    try:
        return asyncio.run(coro)
    except FTPError as exc:
        say(f"ftpkit: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        say("ftpkit: interrupted")
        sys.exit(130)


def showing_progress() -> bool:
    """Whether transfers show a progress bar: only on a terminal."""
    return sys.stderr.isatty()


@contextmanager
def progress_bar(name: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal (bytes, rate, ETA); nothing when stderr is not a terminal."""
    if not showing_progress():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(name, total=total)
        yield functools.partial(lambda n, t=task: progress.advance(t, n))
