"""``ftpkit doctor URL``: exit 0 healthy, 1 problems found, 2 usage error."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Literal

import click
from rich.console import Console

from ftpkit.client.url import URLError, parse_url
from ftpkit.diagnosis import choose_language
from ftpkit.doctor import DoctorOptions, run_doctor
from ftpkit.doctor.render import render_text, to_json
from ftpkit.doctor.run import DoctorTLSMode
from ftpkit.protocol.hostport import DataMode


@click.command("doctor")
@click.argument("url")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.05, max=120),
              help="seconds for each step")
@click.option("--active-address", metavar="ADDR", help="announce ADDR in PORT/EPRT (behind NAT with a port forward)")
@click.option("--mode", type=click.Choice(["both", "passive", "active"]), default="both", show_default=True,
              help="which data connection modes to test")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (schema in the README)")
@click.option("--lang", type=click.Choice(["en", "ja"]), help="language (default: from LANG)")
@click.option("--encoding", default="utf-8", show_default=True, help="the server's encoding of names and replies")
@click.option("--netrc-file", metavar="FILE", help="credentials file (default ~/.netrc)")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--tls", "tls_explicit", is_flag=True, help="test FTPS with AUTH TLS (ftps:// URLs: implicit TLS)")
@click.option("--ca-file", metavar="PEM", help="trust this CA (or self-signed certificate)")
@click.option("--insecure", is_flag=True, help="do not verify the server's certificate")
def doctor_command(url: str, timeout: float, active_address: str | None, mode: Literal["both"] | DataMode,
                   as_json: bool, lang: str | None, encoding: str, netrc_file: str | None, password_stdin: bool,
                   tls_explicit: bool, ca_file: str | None, insecure: bool) -> None:
    """Find out which connection fails (control or data), in which mode (passive, active), why, and what to change."""
    try:
        target = parse_url(url)
    except URLError as exc:
        raise click.UsageError(str(exc)) from None
    if password_stdin:
        target = target.with_credentials(target.user or "anonymous", sys.stdin.readline().rstrip("\r\n"))
    modes: tuple[DataMode, ...] = ("passive", "active") if mode == "both" else (mode,)
    tls: DoctorTLSMode = "implicit" if target.scheme == "ftps" else ("explicit" if tls_explicit else "off")
    options = DoctorOptions(timeout=timeout, active_address=active_address, encoding=encoding,
                            netrc_file=netrc_file, modes=modes, tls=tls, ca_file=ca_file, verify=not insecure)
    language = choose_language(lang)
    report = asyncio.run(run_doctor(target, options))
    if as_json:
        click.echo(json.dumps(to_json(report, language), ensure_ascii=False, indent=2))
    else:
        render_text(report, Console(highlight=False), language)
    sys.exit(0 if report.healthy else 1)
