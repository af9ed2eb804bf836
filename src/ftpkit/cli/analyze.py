"""``ftpkit analyze CAPTURE...``: exit 0 no problem found, 1 findings, 2 unreadable input or usage error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from ftpkit.capture import Options, analyze
from ftpkit.capture.render_html import render_html
from ftpkit.capture.render_json import to_json
from ftpkit.capture.render_text import render


@click.command("analyze")
@click.argument("captures", nargs=-1, required=True, metavar="CAPTURE...")
@click.option("--ftp-port", "ftp_ports", multiple=True, metavar="PORT", type=click.IntRange(1, 65535),
              help="also a control port (repeatable; 21 and 990 always are, and greetings are found on any port)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (schema in the README)")
@click.option("--html", "html_file", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
              help="also write a self-contained HTML page with sequence diagrams to FILE")
@click.option("--show-passwords", is_flag=True, help="show passwords instead of ****")
@click.option("--lang", type=click.Choice(["en", "ja"]), help="language (default: from LANG)")
@click.option("--slow-reply", default=5.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="a reply later than this is a finding")
@click.option("--max-flows", default=100_000, show_default=True, type=click.IntRange(min=100),
              help="TCP connections tracked at once (bounds memory)")
def analyze_command(captures: tuple[str, ...], ftp_ports: tuple[int, ...], as_json: bool, html_file: str | None,
                    show_passwords: bool, lang: str | None, slow_reply: float, max_flows: int) -> int:
    """Rebuild the FTP sessions in pcap/pcapng captures (also gzip-compressed): commands and replies, each data
    connection paired with its announcement, drawn as a sequence diagram, with what went wrong and what to change.

    Two captures of the same sessions on both sides of a NAT are matched, and what an FTP helper rewrote is shown.
    """
    options = Options(ftp_ports=frozenset({21, 990, *ftp_ports}), show_passwords=show_passwords, lang=lang,
                      slow_reply=slow_reply, max_flows=max_flows)
    report = analyze(captures, options)
    if as_json:
        click.echo(json.dumps(to_json(report), ensure_ascii=False, indent=2))
    else:
        render(report, Console(highlight=False))
    if html_file:
        try:
            Path(html_file).write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            click.echo(f"{html_file}: {exc.strerror or exc}", err=True)
            return 2
    for error in report.errors:
        click.echo(error, err=True)
    sys.stdout.flush()
    return report.exit_code
