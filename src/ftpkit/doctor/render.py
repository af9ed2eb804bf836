"""The doctor's report: for a terminal (rich, with colour) and as JSON. Every word comes from the catalog."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from ftpkit.diagnosis import catalog
from ftpkit.doctor.model import Check, DoctorReport
from ftpkit.protocol.hostport import DataMode

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}
MARK = {"pass": "✓", "warn": "!", "fail": "✗", "skipped": "-"}
SEVERITY_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}


def detail(check: Check, lang: str) -> str:
    return catalog(lang).text("details", check.detail, **check.params)


def summary_facts(report: DoctorReport) -> dict[str, str | None]:
    control = next(c for c in report.checks if c.name == "control").status
    greeting = next(c for c in report.checks if c.name == "greeting").status

    def mode(name: DataMode) -> str | None:
        ok = report.mode_ok(name)
        return None if ok is None else ("ok" if ok else "fails")

    return {"control": "ok" if control == "pass" and greeting == "pass" else "fails",
            "passive": mode("passive"), "active": mode("active")}


def render_text(report: DoctorReport, console: Console, lang: str, show_sequence: bool = True) -> None:
    cat = catalog(lang)
    console.print(Text(cat.text("doctor", "title", url=report.url), style="bold"))
    for check in report.checks:
        line = Text()
        line.append(f" {MARK[check.status]} ", style=STYLE[check.status])
        word = cat.text("status", check.status)
        line.append(word + " " * max(1, 6 - cell_len(word)), style=STYLE[check.status])
        line.append(f"{cat.text('checks', check.name)}: ", style="bold")
        line.append(detail(check, lang))
        if check.status != "skipped":
            line.append(f"  ({check.seconds * 1000:.0f} ms)", style="dim")
        console.print(line)
        if show_sequence and check.status in ("warn", "fail"):
            for step in check.sequence:
                console.print(Text(f"       {step}", style="dim"))
    facts = summary_facts(report)
    console.print()
    console.print(Text(cat.text("doctor", "summary"), style="bold"))
    for key, label in (("control", "control"), ("passive", "data-passive"), ("active", "data-active")):
        value = facts[key]
        word = cat.text("doctor", "not-tested") if value is None else cat.text(
            "doctor", "works" if value == "ok" else "fails")
        style = "dim" if value is None else ("green" if value == "ok" else "bold red")
        console.print(Text.assemble(f"  {cat.text('doctor', label)}: ", (word, style)))
    console.print()
    console.print(Text(cat.text("doctor", "findings"), style="bold"))
    for finding in report.findings:
        console.print(Text.assemble(("  [" + finding.code + "] ", SEVERITY_STYLE[finding.severity]),
                                    finding.summary(lang)))
        explanation = cat.explanation(finding.code, finding.params)
        if explanation:
            console.print(Text(f"      {explanation}"))
        for fact in finding.evidence:
            console.print(Text(f"      {cat.word('evidence')}: {fact}", style="dim"))
        for side, text in finding.advice(lang):
            console.print(Text.assemble(("      → ", "bold"), (f"{cat.word('advice-' + side)}: ", "bold"), text))
    if report.facts.logged_in and not report.facts.probe_offered:
        console.print(Text(f"  {cat.text('doctor', 'nat-unknown')}", style="dim"))
    console.print(Text(cat.text("doctor", "took", seconds=f"{report.seconds:.2f}"), style="dim"))


def to_json(report: DoctorReport, lang: str) -> dict[str, Any]:
    facts = report.facts
    return {
        "url": report.url,
        "healthy": report.healthy,
        "seconds": round(report.seconds, 3),
        "summary": summary_facts(report),
        "control": {"host": facts.host, "port": facts.port, "addresses": facts.addresses, "peer": facts.peer,
                    "local": facts.local, "greeting": facts.greeting, "user": facts.user,
                    "server_sees": facts.server_sees},
        "checks": [{"name": c.name, "title": catalog(lang).text("checks", c.name), "status": c.status,
                    "detail": detail(c, lang), "detail_key": c.detail, "params": c.params,
                    "seconds": round(c.seconds, 4), "sequence": c.sequence} for c in report.checks],
        "passive": [{"method": p.method, "reply": p.reply, "announced": str(p.announced) if p.announced else None,
                     "port": p.announced.port if p.announced else None, "classification": p.classification,
                     "direct": p.direct, "substituted": p.substituted, "list": p.list_reply, "ok": p.worked}
                    for p in facts.passive],
        "active": [{"method": p.method, "sent": p.sent, "reply": p.reply,
                    "announced": str(p.announced) if p.announced else None,
                    "connected_from": f"{p.connected_from[0]}:{p.connected_from[1]}" if p.connected_from else None,
                    "server_received": p.server_received, "list": p.list_reply, "ok": p.worked}
                   for p in facts.active],
        "findings": [f.to_json(lang) for f in report.findings],
    }
