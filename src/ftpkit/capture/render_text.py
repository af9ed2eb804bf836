"""The terminal report: per session a header, the sequence diagram, the transfers and the findings."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from ftpkit.capture.diagram import Row, clock, fate_text, label, rate, rows, size
from ftpkit.capture.model import NatPair, Report, Session, Transfer
from ftpkit.diagnosis import Finding, catalog

ARROWS = {"c2s": "--->", "s2c": "<---", "data-c2s": "===>", "data-s2c": "<===", "note": "  ! "}
STYLES = {"ok": "green", "fail": "bold red", "warn": "yellow", "": ""}
SEVERITY_STYLES = {"fail": "bold red", "warn": "yellow", "info": "cyan", "ok": "green"}


def render(report: Report, console: Console) -> None:
    lang = report.lang
    out = console.print
    packets = sum(f.packets for f in report.files)
    out(Text(label(lang, "title"), style="bold"), Text("  " + label(lang, "files", count=len(report.files),
        packets=packets, sessions=len(report.sessions))), soft_wrap=True)
    for f in report.files:
        kind = f.format + (" (gzip)" if f.compressed else "")
        out(Text(f"  {f.name}: {kind}, {f.packets} packets"), soft_wrap=True)
    if not report.sessions:
        out(label(lang, "no-sessions"))
    for session in report.sessions:
        out()
        _session(report, session, console)
    if report.nat_pairs:
        out()
        out(Text(label(lang, "nat"), style="bold underline"))
        for pair in report.nat_pairs:
            nat_pair_block(pair, console, lang)
    out()
    problems = len(report.problems)
    if problems:
        out(Text(label(lang, "problems", count=problems), style="bold red"))
    elif not report.errors:
        out(Text(label(lang, "no-problem-all"), style="green"))


def _session(report: Report, s: Session, console: Console) -> None:
    session_block(s, console, report.lang, report.show_passwords)


def session_block(s: Session, console: Console, lang: str, show_passwords: bool = False) -> None:
    """One session: header, facts, the sequence diagram, the transfers and the findings."""
    out = console.print
    head = Text(label(lang, "session", index=s.index), style="bold underline")
    head.append(f"  {s.client} -> {s.server}", style="bold")
    out(head, soft_wrap=True)
    facts = [f"{label(lang, 'user')}: {s.user if s.user is not None else '-'}"]
    if show_passwords and s.password is not None:
        facts[0] += f" / {s.password}"
    facts += [f"{label(lang, 'start')}: {clock(s.start)}", f"{label(lang, 'duration')}: {s.duration:.3f} s",
              f"{label(lang, 'file')}: {s.file}"]
    out(Text("  " + "   ".join(facts), style="dim"), soft_wrap=True)
    if not s.started_at_syn:
        out(Text("  " + label(lang, "mid-session"), style="yellow"), soft_wrap=True)
    out()
    left = f"{label(lang, 'client')} {s.client}"
    pad = " " * max(1, 44 - cell_len(left))  # wide (Japanese) characters take two cells
    out(Text(f"           {left}{pad}{label(lang, 'server')} {s.server}", style="bold"), soft_wrap=True)
    for row in rows(s, lang):
        out(_row(row, s.start), soft_wrap=True)
    if s.transfers:
        out()
        out(Text("  " + label(lang, "transfers"), style="bold"))
        for t in s.transfers:
            _transfer(lang, t, console)
    out()
    if s.findings:
        out(Text("  " + label(lang, "findings"), style="bold"))
        for finding in s.findings:
            _finding(finding, lang, console)
    else:
        out(Text("  " + label(lang, "no-problem"), style="green"))


def nat_pair_block(pair: NatPair, console: Console, lang: str) -> None:
    out = console.print
    out(Text("  " + label(lang, "nat-pair", inside=pair.inside.index, outside=pair.outside.index)), soft_wrap=True)
    for sent, received in pair.rewrites:
        out(Text("    " + label(lang, "rewrite", sent=sent, received=received)), soft_wrap=True)
    for finding in pair.findings:
        _finding(finding, lang, console)


def _row(row: Row, start: float) -> Text:
    line = Text(f"  {row.ts - start:8.3f}  ", style="dim")
    style = STYLES[row.status]
    line.append(ARROWS[row.arrow] + " ", style=style or ("bold" if row.arrow.startswith("data") else ""))
    line.append(row.text, style=style if row.arrow != "c2s" else "")
    if row.detail:
        line.append("   " + row.detail, style="dim" if row.status != "fail" else style)
    return line


def _transfer(lang: str, t: Transfer, console: Console) -> None:
    out = console.print
    title = f"    {label(lang, 'transfer', index=t.index)}: "
    title += f"{t.command} {t.arg or ''}".rstrip() if t.command else label(lang, "not-used")
    out(Text(title), soft_wrap=True)
    if t.method:
        reply = f" -> {t.announce_reply[0]}" if t.announce_reply else ""
        computation = f"   ({t.computation})" if t.computation else ""
        out(Text(f"      {label(lang, 'announced')}: {t.announced}{computation}   [{t.announce_text}{reply}]"),
            soft_wrap=True)
    else:
        out(Text(f"      {label(lang, 'not-announced')}", style="dim"), soft_wrap=True)
    conn = t.connection
    fate = fate_text(lang, conn, t)
    style = "green" if t.fate in ("established", "not-captured") else "bold red"
    if conn is not None:
        port20 = label(lang, "from-port-20" if conn.initiator.port == 20 else "not-from-port-20")
        line = Text(f"      {label(lang, 'data')}: {conn.initiator} -> {conn.responder}   ({port20})   ")
        line.append(fate, style=style)
        if len(t.connections) > 1:
            line.append(f"   [{len(t.connections)} connections]")
        out(line, soft_wrap=True)
        moved = t.bytes_to_client() + t.bytes_to_server()
        if conn.fate == "established":
            out(Text(f"      {label(lang, 'bytes')}: {label(lang, 'to-client', size=size(t.bytes_to_client()))}, "
                     f"{label(lang, 'to-server', size=size(t.bytes_to_server()))}   {conn.duration:.3f} s   "
                     f"{rate(moved, conn.duration)}"), soft_wrap=True)
    elif t.command is not None:
        out(Text(f"      {label(lang, 'data')}: ").append(fate, style=style), soft_wrap=True)
    if t.final:
        out(Text(f"      {label(lang, 'reply')}: {t.final[0]} {t.final[1].splitlines()[0] if t.final[1] else ''}",
                 style="red" if t.final[0] >= 400 else ""), soft_wrap=True)


def _finding(f: Finding, lang: str, console: Console) -> None:
    cat = catalog(lang)
    out = console.print
    line = Text("    ")
    line.append(f"[{f.code}]", style=SEVERITY_STYLES.get(f.severity, ""))
    line.append(" " + f.summary(lang))
    out(line, soft_wrap=True)
    for evidence in f.evidence:
        out(Text(f"        {cat.word('evidence')}: {evidence}", style="dim"), soft_wrap=True)
    for side, text in f.advice(lang):
        out(Text(f"        {cat.word('advice-' + side)}: {text}"), soft_wrap=True)
