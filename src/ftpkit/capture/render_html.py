"""One self-contained HTML page (inline CSS and SVG, no scripts, nothing fetched) to attach to a ticket: the
sessions, their sequence diagrams drawn as pictures, the transfers and the findings."""

from __future__ import annotations

from html import escape

from ftpkit.capture.diagram import Row, clock, fate_text, label, rate, rows, size
from ftpkit.capture.findings import announcement
from ftpkit.capture.model import Report, Session, Transfer
from ftpkit.diagnosis import Finding, catalog

WIDTH, LEFT, RIGHT, ROW, TOP = 1040, 190, 850, 30, 56
CHARS = 88  # label characters that fit between the lifelines
COLORS = {"ok": "#1a7f37", "fail": "#cf222e", "warn": "#9a6700", "": "#24292f"}
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#24292f;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
.facts,.dim{color:#57606a}code,pre,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:.25em .5em;text-align:left;
vertical-align:top}th{background:#f6f8fa}.fail{color:#cf222e;font-weight:600}.warn{color:#9a6700}
.info{color:#0969da}.ok{color:#1a7f37}.finding{margin:.6em 0 .9em}.finding ul{margin:.2em 0}svg{max-width:100%}
"""


def _svg(s: Session, lang: str) -> str:
    items = rows(s, lang)
    height = TOP + ROW * len(items) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="ui-monospace,Menlo,Consolas,monospace" font-size="12">',
           '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="context-stroke"/></marker></defs>']
    for x, who, ep in ((LEFT, label(lang, "client"), s.client), (RIGHT, label(lang, "server"), s.server)):
        out.append(f'<text x="{x}" y="18" text-anchor="middle" font-weight="bold">{escape(who)}</text>'
                   f'<text x="{x}" y="34" text-anchor="middle">{escape(str(ep))}</text>'
                   f'<line x1="{x}" y1="42" x2="{x}" y2="{height - 8}" stroke="#8c959f" stroke-width="2"/>')
    for i, row in enumerate(items):
        out.append(_svg_row(row, TOP + ROW * i, s.start))
    out.append("</svg>")
    return "".join(out)


def _svg_row(row: Row, y: int, start: float) -> str:
    color = COLORS[row.status]
    full = f"{row.text} · {row.detail}" if row.detail else row.text
    text = row.text if len(row.text) <= CHARS else row.text[: CHARS - 1] + "…"
    room = CHARS - len(text) - 3
    detail = row.detail if len(row.detail) <= room else row.detail[: max(0, room - 1)] + "…"
    detail = detail if room >= 4 else ""
    shown = escape(text) + (f'<tspan fill="#57606a"> · {escape(detail)}</tspan>' if detail else "")
    time = f'<text x="8" y="{y + 12}" fill="#57606a">+{row.ts - start:.3f}</text>'
    tip = f"<title>{escape(full)}</title>"
    if row.arrow == "note":
        return (f'{time}<text x="{(LEFT + RIGHT) // 2}" y="{y + 12}" text-anchor="middle" fill="{color}" '
                f'font-style="italic">{tip}{shown}</text>')
    x1, x2 = (LEFT, RIGHT) if row.arrow in ("c2s", "data-c2s") else (RIGHT, LEFT)
    data = row.arrow.startswith("data")
    width = 3 if data else 1.5
    dash = ' stroke-dasharray="6 4"' if data and row.status == "fail" else ""
    stroke = color if data or row.status == "fail" else "#24292f"
    failed = data and row.status == "fail"  # the SYN goes half way and meets a wall
    end = (x1 + x2) // 2 + (60 if x2 > x1 else -60) if failed else x2
    marker = "" if failed else ' marker-end="url(#a)"'
    cross = (f'<text x="{end + (8 if x2 > x1 else -8)}" y="{y + 24}" text-anchor="middle" fill="{color}" '
             f'font-size="18" font-weight="bold">✕</text>') if failed else ""
    return (f'{time}<g>{tip}<text x="{(LEFT + RIGHT) // 2}" y="{y + 10}" text-anchor="middle" fill="{color}">'
            f"{shown}</text>"
            f'<line x1="{x1}" y1="{y + 18}" x2="{end}" y2="{y + 18}" stroke="{stroke}" stroke-width="{width}"{dash}'
            f"{marker}/>{cross}</g>")


def _transfers(ts: list[Transfer], lang: str) -> str:
    head = [label(lang, "transfer", index="#"), label(lang, "announced"), label(lang, "data"), label(lang, "bytes"),
            label(lang, "reply")]
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for t in ts:
        command = f"{t.command} {t.arg or ''}".rstrip() if t.command else label(lang, "not-used")
        announced = f"{t.method} {t.announced}<br><span class=dim>{escape(announcement(t))}</span>" if t.method \
            else label(lang, "not-announced")
        conn = t.connection
        fate_class = "ok" if t.fate in ("established", "not-captured") else "fail"
        data = f'<span class="{fate_class}">{escape(fate_text(lang, conn, t))}</span>'
        if conn is not None:
            port20 = label(lang, "from-port-20" if conn.initiator.port == 20 else "not-from-port-20")
            data = f"{escape(str(conn.initiator))} → {escape(str(conn.responder))} ({escape(port20)})<br>{data}"
        moved = ""
        if conn is not None and conn.fate == "established":
            port20 = label(lang, "from-port-20" if conn.initiator.port == 20 else "not-from-port-20")
            total = t.bytes_to_client() + t.bytes_to_server()
            moved = (f"{escape(label(lang, 'to-client', size=size(t.bytes_to_client())))}<br>"
                     f"{escape(label(lang, 'to-server', size=size(t.bytes_to_server())))}<br>"
                     f"{conn.duration:.3f} s, {escape(rate(total, conn.duration))}")
        final = "" if t.final is None else escape(f"{t.final[0]} {t.final[1].splitlines()[0] if t.final[1] else ''}")
        final_class = "fail" if t.final and t.final[0] >= 400 else ""
        out.append(f"<tr><td class=mono>{t.index}. {escape(command)}</td><td class=mono>{announced}</td>"
                   f"<td class=mono>{data}</td><td>{moved}</td><td class='mono {final_class}'>{final}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _finding(f: Finding, lang: str) -> str:
    cat = catalog(lang)
    explanation = cat.explanation(f.code, f.params)
    parts = [f'<div class="finding"><span class="{f.severity}">[{escape(f.code)}]</span> {escape(f.summary(lang))}']
    if explanation:
        parts.append(f"<div class=dim>{escape(explanation)}</div>")
    items = [f"<li class=mono>{escape(cat.word('evidence'))}: {escape(e)}</li>" for e in f.evidence]
    items += [f"<li>{escape(cat.word('advice-' + side))}: {escape(text)}</li>" for side, text in f.advice(lang)]
    parts.append("<ul>" + "".join(items) + "</ul></div>")
    return "".join(parts)


def _session(s: Session, report: Report) -> str:
    lang = report.lang
    facts = [f"{label(lang, 'user')}: {s.user if s.user is not None else '-'}",
             f"{label(lang, 'start')}: {clock(s.start)}", f"{label(lang, 'duration')}: {s.duration:.3f} s",
             f"{label(lang, 'file')}: {s.file}"]
    out = [f"<h2>{escape(label(lang, 'session', index=s.index))}: {escape(str(s.client))} → {escape(str(s.server))}"
           f"</h2><p class=facts>{escape('   ·   '.join(facts))}</p>"]
    if not s.started_at_syn:
        out.append(f"<p class=warn>{escape(label(lang, 'mid-session'))}</p>")
    out.append(_svg(s, lang))
    if s.transfers:
        out.append(f"<h3>{escape(label(lang, 'transfers'))}</h3>{_transfers(s.transfers, lang)}")
    out.append(f"<h3>{escape(label(lang, 'findings'))}</h3>")
    out += [_finding(f, lang) for f in s.findings] or [f"<p class=ok>{escape(label(lang, 'no-problem'))}</p>"]
    return "".join(out)


def render_html(report: Report) -> str:
    lang = report.lang
    packets = sum(f.packets for f in report.files)
    out = [f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{escape(label(lang, "title"))}'
           f"</title><style>{CSS}</style></head><body><h1>{escape(label(lang, 'title'))}</h1>",
           f"<p>{escape(label(lang, 'files', count=len(report.files), packets=packets, sessions=len(report.sessions)))}"
           "</p><ul>"]
    for f in report.files:
        error = f' <span class="fail">{escape(f.error)}</span>' if f.error else ""
        out.append(f"<li class=mono>{escape(f.name)}: {escape(f.format)}, {f.packets} packets{error}</li>")
    out.append("</ul>")
    problems = len(report.problems)
    summary = label(lang, "problems", count=problems) if problems else label(lang, "no-problem-all")
    out.append(f'<p class="{"fail" if problems else "ok"}">{escape(summary)}</p>')
    if not report.sessions:
        out.append(f"<p>{escape(label(lang, 'no-sessions'))}</p>")
    out += [_session(s, report) for s in report.sessions]
    if report.nat_pairs:
        out.append(f"<h2>{escape(label(lang, 'nat'))}</h2>")
        for pair in report.nat_pairs:
            out.append(f"<p>{escape(label(lang, 'nat-pair', inside=pair.inside.index, outside=pair.outside.index))}")
            out += [f"<br><code>{escape(label(lang, 'rewrite', sent=a, received=b))}</code>" for a, b in pair.rewrites]
            out.append("</p>")
            out += [_finding(f, lang) for f in pair.findings]
    out.append("</body></html>\n")
    return "".join(out)
