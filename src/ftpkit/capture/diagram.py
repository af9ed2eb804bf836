"""What the renderers share: labels from the catalogs, number formats, and the rows of a sequence diagram.

A session's diagram is its control conversation (``--->`` commands, ``<---`` replies) merged in time with its data
connections (``===>`` opened by the client, ``<===`` opened by the server) and notes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from ftpkit.capture.model import DataConn, LogEntry, Session, Transfer
from ftpkit.diagnosis import catalog

Arrow = Literal["c2s", "s2c", "data-c2s", "data-s2c", "note"]
Status = Literal["ok", "fail", "warn", ""]


def label(lang: str, key: str, **params: object) -> str:
    """A label of the report (the ``[analyze]`` table of the catalog; English when a language lacks it)."""
    for cat in (catalog(lang), catalog("en")):
        text = cat.data.get("analyze", {}).get(key)
        if text is not None:
            return text.format(**{k: str(v) for k, v in params.items()})
    return key


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def rate(nbytes: int, seconds: float) -> str:
    if seconds <= 0:
        return "-"
    return size(int(nbytes / seconds)) + "/s"


def delay(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.3f} s"


def clock(ts: float) -> str:
    """``2023-11-14 22:13:20.005 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d} UTC"


@dataclass(frozen=True, slots=True)
class Row:
    ts: float
    arrow: Arrow
    text: str
    detail: str = ""  # computation, delay, data-connection outcome
    status: Status = ""


def fate_text(lang: str, conn: DataConn | None, transfer: Transfer) -> str:
    fate = conn.fate if conn is not None else transfer.fate
    retrans = conn.retransmissions if conn is not None else 0
    return label(lang, f"fate-{fate}", retransmissions=retrans)


def _conn_row(lang: str, t: Transfer, conn: DataConn) -> Row:
    arrow: Arrow = "data-s2c" if t.active else "data-c2s"  # active: the server connects to the client
    what = "syn-from" if conn.syn_seen else "data-from"
    text = label(lang, what, source=conn.initiator, target=conn.responder)
    fate = conn.fate
    if fate == "established":
        moved = conn.bytes_from_initiator + conn.bytes_from_responder
        detail = label(lang, "detail-established", bytes=size(moved), seconds=f"{conn.duration:.3f}",
                       rate=rate(moved, conn.duration))
        status: Status = "ok"
    elif fate == "refused":
        detail, status = label(lang, "detail-refused", target=conn.responder), "fail"
    elif fate == "syn-unanswered":
        detail, status = label(lang, "detail-unanswered", retransmissions=conn.retransmissions), "fail"
    else:
        detail, status = label(lang, "detail-unknown"), ""
    ts = conn.syn_ts if conn.syn_ts is not None else conn.first_ts
    return Row(ts, arrow, text, detail, status)


def _entry_row(lang: str, e: LogEntry) -> Row:
    if e.side == "client":
        return Row(e.ts, "c2s", e.text, f"({e.computation})" if e.computation else "")
    if e.side == "server":
        extra = f"({e.computation})" if e.computation else ""
        detail = "   ".join(x for x in (extra, delay(e.delay)) if x)
        status: Status = "fail" if e.code is not None and e.code >= 400 else ""
        more = f"  [+{len(e.lines) - 1}]" if len(e.lines) > 1 else ""
        return Row(e.ts, "s2c", e.text + more, detail, status)
    text = label(lang, e.note or "", size=e.size, text=e.text)
    return Row(e.ts, "note", text, "", "warn")


def rows(s: Session, lang: str) -> list[Row]:
    out = [_entry_row(lang, e) for e in s.log]
    for t in s.transfers:
        for conn in t.connections:
            out.append(_conn_row(lang, t, conn))
        if not t.connections and t.announced is not None and t.command is not None and t.fate == "never-attempted":
            ts = t.final_ts if t.final_ts is not None else (t.command_ts or s.end)
            out.append(Row(ts - 1e-9, "note", label(lang, "no-connection", announced=t.announced), "", "fail"))
    if s.log_dropped:
        out.append(Row(s.end, "note", label(lang, "log-dropped", count=s.log_dropped), "", ""))
    out.sort(key=lambda r: r.ts)  # stable: log order is kept for equal times
    return out
