"""``ftpkit analyze CAPTURE...`` and ``ftpkit analyze --live``.

Files: exit 0 no problem found, 1 findings, 2 unreadable input or usage error. Live: exit 0 when stopped by Ctrl-C
(SIGINT) or SIGTERM; with ``--duration``, 0 or 1 as for files; 2 when the capture cannot run (no tool, no
privilege) or its tool stops by itself.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console

from ftpkit.capture import Options, analyze


@click.command("analyze")
@click.argument("captures", nargs=-1, metavar="[CAPTURE]...")
@click.option("--live", is_flag=True, help="capture now (tcpdump or dumpcap) and report each session as it ends")
@click.option("-i", "--interface", "interfaces", multiple=True, metavar="IFACE",
              help="--live: the interface (repeatable, one capture point each; default: any)")
@click.option("--ftp-port", "--port", "ftp_ports", multiple=True, metavar="PORT", type=click.IntRange(1, 65535),
              help="also a control port (repeatable; 21 and 990 always are, and greetings are found on any port)")
@click.option("--duration", type=click.FloatRange(min=0.1), metavar="SECONDS", help="--live: stop after SECONDS")
@click.option("--write", "write_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="--live: keep the capture in FILE too (FILE-IFACE.pcap with several interfaces)")
@click.option("--filter", "bpf", metavar="EXPR", help="--live: narrow the capture filter to `tcp and (EXPR)`")
@click.option("--capture-tool", type=click.Choice(["tcpdump", "dumpcap"]),
              help="--live: the capture tool (default: tcpdump, else dumpcap)")
@click.option("--capture-buffer", "buffer_mib", default=256, show_default=True, type=click.IntRange(1, 4096),
              metavar="MIB", help="--live: the kernel's capture buffer (bursts it absorbs: about a second at 1 Gbit/s)")
@click.option("--syn-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="a SYN without answer this long is reported as unanswered")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (--live: one object per event)")
@click.option("--html", "html_file", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
              help="also write a self-contained HTML page with sequence diagrams to FILE")
@click.option("--show-passwords", is_flag=True, help="show passwords instead of ****")
@click.option("--lang", type=click.Choice(["en", "ja"]), help="language (default: from LANG)")
@click.option("--slow-reply", default=5.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="a reply later than this is a finding")
@click.option("--max-flows", default=100_000, show_default=True, type=click.IntRange(min=100),
              help="TCP connections tracked at once (bounds memory)")
def analyze_command(captures: tuple[str, ...], live: bool, interfaces: tuple[str, ...], ftp_ports: tuple[int, ...],
                    duration: float | None, write_file: str | None, bpf: str | None, capture_tool: str | None,
                    buffer_mib: int, syn_timeout: float, as_json: bool, html_file: str | None, show_passwords: bool,
                    lang: str | None, slow_reply: float, max_flows: int) -> int:
    """Rebuild the FTP sessions in pcap/pcapng captures (also gzip-compressed): commands and replies, each data
    connection paired with its announcement, drawn as a sequence diagram, with what went wrong and what to change.

    Several files are read in time order as one stream: a rotated set (cap.pcap*) is one capture. Captures of the
    same sessions on both sides of a NAT are matched, and what an FTP helper rewrote is shown.

    With --live it captures itself and prints each data connection's fate and each session's report the moment
    they are known; Ctrl-C prints what is still open.
    """
    options = Options(ftp_ports=frozenset({21, 990, *ftp_ports}), show_passwords=show_passwords, lang=lang,
                      slow_reply=slow_reply, max_flows=max_flows, syn_timeout=syn_timeout)
    if live:
        if captures:
            raise click.UsageError("give capture files or --live, not both")
        if html_file:
            raise click.UsageError("--html: only for capture files")
        request = LiveRequest(interfaces or ("any",), duration, write_file, bpf, capture_tool, buffer_mib)
        return _live(options, request, as_json)
    if not captures:
        raise click.UsageError("missing CAPTURE... (or --live to capture now)")
    for name, value in (("-i/--interface", interfaces), ("--duration", duration), ("--write", write_file),
                        ("--filter", bpf), ("--capture-tool", capture_tool), ("--capture-buffer", buffer_mib != 256)):
        if value:
            raise click.UsageError(f"{name}: only with --live")
    return _files(captures, options, as_json, html_file)


def _files(captures: tuple[str, ...], options: Options, as_json: bool, html_file: str | None) -> int:
    from ftpkit.capture.render_html import render_html
    from ftpkit.capture.render_json import to_json
    from ftpkit.capture.render_text import render

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


@dataclass(frozen=True)
class LiveRequest:
    interfaces: tuple[str, ...]
    duration: float | None
    write_file: str | None
    bpf: str | None
    tool: str | None
    buffer_mib: int


def _live(options: Options, request: LiveRequest, as_json: bool) -> int:
    from ftpkit.capture.diagram import label
    from ftpkit.capture.live import LiveError, LiveOptions, run_live
    from ftpkit.capture.render_events import JsonEvents, TextEvents
    from ftpkit.diagnosis import choose_language

    lang = choose_language(options.lang)

    def ready(tool: str, ifaces: tuple[str, ...], capture_filter: str) -> None:
        click.echo(label(lang, "live-capturing", interfaces=", ".join(ifaces), tool=tool, filter=capture_filter),
                   err=True)
        if isinstance(sink, JsonEvents):
            sink.started(tool, ifaces, capture_filter)

    sink: JsonEvents | TextEvents
    if as_json:
        sink = JsonEvents(sys.stdout, lang, options.show_passwords)
    else:
        sink = TextEvents(Console(highlight=False), lang, options.show_passwords, options.syn_timeout)
    live = LiveOptions(interfaces=request.interfaces, tool=request.tool, duration=request.duration,
                       write=Path(request.write_file) if request.write_file else None, bpf=request.bpf,
                       buffer_mib=request.buffer_mib)
    try:
        result, analyzer = run_live(options, live, sink, ready)
    except LiveError as exc:
        click.echo(f"ftpkit analyze: {exc}", err=True)
        return 2
    sink.summary(result, analyzer.ended, analyzer.problems)
    sys.stdout.flush()
    if result.error:
        click.echo(f"ftpkit analyze: {result.error}", err=True)
        return 2
    if result.stopped == "duration":
        return 1 if analyzer.problems else 0
    return 0
