"""The lab's report: the scenario and its explanation, the topology and the rules in force, each transfer's outcome, the
doctor's diagnosis, the analyzer's findings and the ftpkit server's own diagnosis, side by side. For a terminal
(rich) and as JSON. The words come from the catalog's ``[lab]`` table; the findings' texts from the shared diagnosis
catalog."""

from __future__ import annotations

import shlex
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from ftpkit.diagnosis import catalog
from ftpkit.lab import peers
from ftpkit.lab.runner import CAPTURE_SIDES, LabReport, TransferResult
from ftpkit.lab.scenarios import Scenario
from ftpkit.lab.topology import HANDS_ON, Names

SEVERITY_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}
SCHEMA = 1
CAPTURE_IFACES = {side: iface for iface, side in CAPTURE_SIDES}


def _lab(lang: str, key: str, **params: object) -> str:
    return catalog(lang).text("lab", key, **params)


def list_scenarios(console: Console, lang: str) -> None:
    from ftpkit.lab.scenarios import SCENARIOS

    width = max(len(name) for name in SCENARIOS)
    for name, scenario in SCENARIOS.items():
        console.print(Text.assemble((name.ljust(width), "bold"), "  ", scenario.summary(lang)))


def topology_lines(report: LabReport) -> list[str]:
    """The three namespaces top to bottom, each with its interfaces and addresses."""
    lines: list[str] = []
    width = max(len(i.namespace) for i in report.interfaces)
    seen: list[str] = []
    for iface in report.interfaces:
        first = iface.namespace not in seen
        if first and seen:
            lines.append(f"{'':{width // 2}}│")
        if first:
            seen.append(iface.namespace)
        name = iface.namespace if first else ""
        lines.append(f"{name:{width}}  {iface.name:9} {iface.address}")
    return lines


def display_command(argv: list[str]) -> str:
    """A command line as a person would type it: ``ftpkit`` for ``python -m ftpkit``."""
    words = list(argv)
    for i in range(len(words) - 2):
        if words[i + 1:i + 3] == ["-m", "ftpkit"]:
            words[i:i + 3] = ["ftpkit"]
            break
    return shlex.join(words)


def _row_text(t: TransferResult, lang: str) -> Text:
    cat = catalog(lang)
    line = Text()
    line.append(" ✓ " if t.ok else " ✗ ", style="green" if t.ok else "bold red")
    label = _lab(lang, f"row-{t.row}")
    line.append(label + " " * max(1, 28 - cell_len(label)), style="bold")
    line.append(cat.word("ok") if t.ok else cat.word("failed"), style="green" if t.ok else "bold red")
    line.append(f"  {t.seconds:5.2f} s  ", style="dim")
    expectation = _lab(lang, "expected-works" if t.expected else "expected-fails")
    if t.as_expected:
        line.append(f"({expectation})", style="dim")
    else:
        line.append(f"{_lab(lang, 'unexpected')} ({expectation})", style="bold red reverse")
    return line


def _findings(console: Console, findings: list[dict[str, Any]], lang: str, show_side: bool) -> None:
    """Each code once (the first occurrence's text), with where and how often it was seen."""
    merged: dict[str, dict[str, Any]] = {}
    for f in findings:
        key = f["code"]
        entry = merged.setdefault(key, {**f, "sides": [], "count": 0})
        entry["count"] += 1
        if f.get("side") and f["side"] not in entry["sides"]:
            entry["sides"].append(f["side"])
    for f in merged.values():
        head = Text.assemble(("  [" + f["code"] + "] ", SEVERITY_STYLE.get(f["severity"], "")), f["summary"])
        if show_side and f["sides"]:
            sides = ", ".join(_lab(lang, f"side-{s}") for s in f["sides"])
            head.append(f"  ({sides}{', x' + str(f['count']) if f['count'] > 1 else ''})", style="dim")
        console.print(head)
        for line in f.get("evidence", [])[:4]:
            console.print(Text(f"      {catalog(lang).word('evidence')}: {line}", style="dim"))
        for advice in f.get("advice", [])[:2]:
            console.print(Text.assemble(("      → ", "bold"), (f"{catalog(lang).word('advice-' + advice['side'])}: ",
                                                              "bold"), advice["text"]))


def render(report: LabReport, console: Console, lang: str) -> None:
    s, o = report.scenario, report.options
    console.print(Text(_lab(lang, "title", scenario=s.name), style="bold"),
                  Text(f"  ({_lab(lang, 'peers', server=o.server, client=o.client)})", style="dim"))
    console.print(Text(s.summary(lang), style="bold cyan"))
    console.print(Text(s.explanation(lang)))
    console.print()
    console.print(Text(_lab(lang, "topology"), style="bold"))
    for line in topology_lines(report):
        console.print(Text(f"  {line}"), soft_wrap=True)
    console.print(Text(f"  {_lab(lang, 'server', line=report.server_line)}"))
    console.print(Text(f"  {_lab(lang, 'target', target=s.target)}"))
    console.print(Text(_lab(lang, "rules"), style="bold"))
    if not s.rules:
        console.print(Text(f"  {_lab(lang, 'no-rules')}", style="dim"))
    for rule in s.rules:
        console.print(Text.assemble((f"  {rule.namespace(report.names)}# ", "dim"), str(rule)), soft_wrap=True)
    console.print()
    console.print(Text.assemble((_lab(lang, "transfers"), "bold"), (
        "  " + _lab(lang, "transfers-detail", file=peers.FILE_NAME, size=len(peers.FILE_BYTES),
                    seconds=f"{o.timeout:g}"), "dim")))
    for t in report.transfers:
        console.print(_row_text(t, lang))
        if t.error:
            console.print(Text(f"      {t.error}", style="red" if t.as_expected else "bold red"))
            console.print(Text(f"      # {display_command(t.command)}", style="dim"), soft_wrap=True)
    console.print()
    console.print(Text(_lab(lang, "doctor"), style="bold"))
    if report.doctor_command:
        console.print(Text(f"  # {display_command(report.doctor_command)}", style="dim"), soft_wrap=True)
    if report.doctor is not None:
        summary = report.doctor.get("summary", {})
        modes = Text("  ")
        for key, label in (("control", "control"), ("passive", "data-passive"), ("active", "data-active")):
            value = summary.get(key)
            word = catalog(lang).text("doctor", "not-tested" if value is None else (
                "works" if value == "ok" else "fails"))
            modes.append(f"{catalog(lang).text('doctor', label)}: ")
            modes.append(word, style="dim" if value is None else ("green" if value == "ok" else "bold red"))
            modes.append("   ")
        console.print(modes)
        _findings(console, report.doctor.get("findings", []), lang, show_side=False)
    else:
        console.print(Text(f"  {report.doctor_error or _lab(lang, 'not-run')}", style="dim"))
    console.print()
    console.print(Text(_lab(lang, "analyzer"), style="bold"))
    if report.analyzer is not None:
        files = report.analyzer.get("files", [])
        console.print(Text("  " + "; ".join(_lab(lang, "captured", side=_lab(lang, f"side-{f['side']}"),
                                                   iface=CAPTURE_IFACES.get(f["side"], "?"), packets=f["packets"])
                                              for f in files), style="dim"))
        for f in files:
            if f.get("error"):
                console.print(Text(f"  {f['error']}", style="red"))
        if report.analyzer["findings"]:
            _findings(console, report.analyzer["findings"], lang, show_side=True)
        else:
            console.print(Text(f"  {_lab(lang, 'no-findings')}", style="green"))
    else:
        console.print(Text(f"  {report.analyzer_error or _lab(lang, 'not-run')}", style="dim"))
    console.print()
    _server_section(report, console, lang)
    if report.live is not None or report.options.live:
        _live(report, console, lang)
    if report.captures:
        console.print(Text(_lab(lang, "captures-kept", files=", ".join(report.captures)), style="dim"))
    console.print()
    seconds = f"{report.seconds:.1f}"
    if report.as_expected:
        console.print(Text(_lab(lang, "result-ok", seconds=seconds), style="bold green"))
    else:
        rows = ", ".join([t.row for t in report.transfers if not t.as_expected]
                         + ([] if report.server_as_expected else [_lab(lang, "server-diagnosis-short")]))
        console.print(Text(_lab(lang, "result-bad", rows=rows, seconds=seconds), style="bold red"))


def _server_section(report: LabReport, console: Console, lang: str) -> None:
    """What the ftpkit server classified on its own, and whether it is what the scenario expects."""
    console.print(Text(_lab(lang, "server-diagnosis"), style="bold"))
    diagnosis = report.server_diagnosis
    if diagnosis is None:
        console.print(Text(f"  {_lab(lang, 'server-not-ftpkit')}", style="dim"))
        return
    if diagnosis.get("error"):
        console.print(Text(f"  {diagnosis['error']}", style="red"))
    if diagnosis["findings"]:
        _findings(console, diagnosis["findings"], lang, show_side=False)
    else:
        console.print(Text(f"  {_lab(lang, 'no-findings')}", style="green"))
    for line in diagnosis.get("summaries", []):
        console.print(Text(f"  {line}", style="dim"))
    if not report.server_as_expected:
        expected = ", ".join(sorted(report.scenario.server_side)) or "-"
        console.print(Text(f"  {_lab(lang, 'server-unexpected', codes=expected)}", style="bold red reverse"))
def _live(report: LabReport, console: Console, lang: str) -> None:
    console.print()
    console.print(Text(_lab(lang, "live"), style="bold"))
    live = report.live
    if live is None:
        console.print(Text(f"  {report.live_error or _lab(lang, 'not-run')}", style="dim"))
        return
    console.print(Text("  " + "; ".join(
        _lab(lang, "live-captured", side=_lab(lang, f"side-{i['side']}"), iface=i["name"], packets=i["packets"],
             dropped="?" if i["dropped"] is None else i["dropped"]) for i in live["interfaces"]), style="dim"))
    if live.get("error"):
        console.print(Text(f"  {live['error']}", style="red"))
    if live["findings"]:
        _findings(console, live["findings"], lang, show_side=True)
    else:
        console.print(Text(f"  {_lab(lang, 'no-findings')}", style="green"))
    if live["differences"]:
        console.print(Text("  " + _lab(lang, "live-differs", differences="; ".join(live["differences"])),
                           style="bold red"))
    else:
        console.print(Text("  " + _lab(lang, "live-same"), style="green"))


def scenario_json(s: Scenario, lang: str, names: Names = HANDS_ON) -> dict[str, Any]:
    return {
        "name": s.name, "summary": s.summary(lang), "explanation": s.explanation(lang), "target": s.target,
        "passive_ports": f"{s.passive_ports[0]}-{s.passive_ports[1]}", "masquerade_address": s.masquerade_address,
        "rules": [{"namespace": r.namespace(names), "command": str(r)} for r in s.rules],
        "expected": {"transfers": dict(s.works), "doctor": sorted(s.doctor), "analyzer": sorted(s.analyzer),
                     "server": sorted(s.server_side)},
    }


def to_json(report: LabReport, lang: str) -> dict[str, Any]:
    o = report.options
    return {
        "tool": "ftpkit lab", "schema": SCHEMA, "lang": lang,
        "scenario": scenario_json(report.scenario, lang, report.names),
        "server": o.server, "client": o.client, "server_line": report.server_line,
        "timeouts": {"data": o.timeout, "client": o.client_timeout, "doctor": o.doctor_timeout},
        "topology": [{"namespace": i.namespace, "interface": i.name, "address": i.address, "faces": i.faces}
                     for i in report.interfaces],
        "transfers": [{"row": t.row, "ok": t.ok, "expected": t.expected, "as_expected": t.as_expected,
                       "seconds": round(t.seconds, 3), "exit_code": t.exit_code, "error": t.error,
                       "command": t.command, "output": t.output} for t in report.transfers],
        "doctor": {"command": report.doctor_command, "codes": sorted(report.doctor_codes),
                   "error": report.doctor_error or None, "report": report.doctor},
        "analyzer": {"codes": sorted(report.analyzer_codes), "error": report.analyzer_error or None,
                     **(report.analyzer or {})},
        "server_diagnosis": None if report.server_diagnosis is None else {
            "codes": sorted(report.server_codes or ()), "as_expected": report.server_as_expected,
            **report.server_diagnosis},
        "live": None if report.live is None and not report.options.live else {
            "codes": sorted(report.live_codes), "error": report.live_error or None, **(report.live or {})},
        "captures": report.captures,
        "as_expected": report.as_expected,
        "seconds": round(report.seconds, 3),
    }
