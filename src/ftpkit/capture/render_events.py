"""Events as they happen, for ``ftpkit analyze --live``: lines for a terminal (a session's whole report the moment
it ends, one line for each connection's fate) or one JSON object per line (JSON Lines) for scripts.

JSON Lines: every object has ``event`` and ``time`` (epoch seconds, capture time):

- ``capture-started``: tool, interfaces, filter
- ``session-started``: session (index), client, server, capture (the interface)
- ``connection``: session, kind (data/control), transfer (index or null), method, announced, command, fate
  (established/refused/syn-unanswered), decided_by (answer/reply/timeout/session-end), data (the connection's
  counters, as in the file report's ``attempts[]``)
- ``session``: reason (closed/reset/idle/capture-end), open (true: still open when the capture stopped), session (the
  same object as ``sessions[]`` in the file report, findings included)
- ``nat-pair``: inside, outside, rewrites, findings (as ``nat_pairs[]`` in the file report)
- ``summary``: stopped (interrupted/duration/tool-exited), seconds, sessions, problems, packets {interface: n},
  tool_stats {interface: {captured, received, dropped}}, dropped, backlog_peak (bytes the analyzer was behind at
  most), written, error
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from ftpkit.capture.diagram import label
from ftpkit.capture.events import ConnectionDecided, Event, NatPaired, SessionEnded, SessionStarted
from ftpkit.capture.live import LiveResult
from ftpkit.capture.render_json import conn_json, endpoint_json, nat_pair_json, session_json
from ftpkit.capture.render_text import nat_pair_block, session_block

FATE_STYLES = {"established": "green", "refused": "bold red", "syn-unanswered": "bold red"}


def clock(ts: float) -> str:
    """``22:13:20.005`` in local time: what the person watching reads on their own clock."""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


class TextEvents:
    def __init__(self, console: Console, lang: str, show_passwords: bool = False, syn_timeout: float = 5.0) -> None:
        self.console = console
        self.lang = lang
        self.show_passwords = show_passwords
        self.syn_timeout = syn_timeout
        self.open_heading = False

    def __call__(self, event: Event) -> None:
        out, lang = self.console.print, self.lang
        if isinstance(event, SessionStarted):
            s = event.session
            out(Text(f"{clock(event.ts)}  " + label(lang, "live-started", index=s.index, client=s.client,
                                                    server=s.server), style="dim"), soft_wrap=True)
        elif isinstance(event, ConnectionDecided):
            out(self._connection(event), soft_wrap=True)
        elif isinstance(event, SessionEnded):
            s = event.session
            if event.reason == "capture-end":
                if not self.open_heading:
                    self.open_heading = True
                    out()
                    out(Text(label(lang, "live-still-open"), style="bold"))
            else:
                out(Text(f"{clock(event.ts)}  " + label(lang, f"live-ended-{event.reason}", index=s.index),
                         style="bold"), soft_wrap=True)
            out()
            session_block(s, self.console, lang, self.show_passwords)
            out()
        elif isinstance(event, NatPaired):
            out(Text(f"{clock(event.ts)}  " + label(lang, "nat"), style="bold underline"))
            nat_pair_block(event.pair, self.console, lang)
            out()

    def _connection(self, e: ConnectionDecided) -> Text:
        lang, conn = self.lang, e.conn
        fate = label(lang, f"fate-{e.fate}", retransmissions=conn.retransmissions)
        if e.by == "timeout":
            fate += ", " + label(lang, "live-by-timeout", seconds=f"{self.syn_timeout:g}")
        if e.transfer is None:
            text = label(lang, "live-control", index=e.session.index, source=conn.initiator, target=conn.responder,
                         fate="")
        else:
            text = label(lang, "live-data", index=e.session.index, method=e.transfer.method or "?",
                         source=conn.initiator, target=conn.responder, fate="")
        line = Text(f"{clock(e.ts)}  {text}")
        line.append(fate, style=FATE_STYLES.get(e.fate, ""))
        return line

    def summary(self, result: LiveResult, sessions: int, problems: int) -> None:
        out, lang = self.console.print, self.lang
        out(Text(label(lang, "live-summary", sessions=sessions, problems=problems, seconds=f"{result.seconds:.1f}"),
                 style="bold red" if problems else "green"))
        for iface, stats in result.stats.items():
            out(Text(label(lang, "live-packets", interface=iface, tool=result.tool,
                           captured=_count(stats.captured), dropped=_count(stats.dropped),
                           analyzed=result.packets.get(iface, 0)), style="dim"), soft_wrap=True)
        if result.written:
            out(Text(label(lang, "live-written", files=", ".join(result.written)), style="dim"), soft_wrap=True)


def _count(n: int | None) -> str:
    return "?" if n is None else str(n)


class JsonEvents:
    def __init__(self, stream: IO[str], lang: str, show_passwords: bool = False) -> None:
        self.stream = stream
        self.lang = lang
        self.show_passwords = show_passwords

    def emit(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.stream.flush()

    def __call__(self, event: Event) -> None:
        self.emit(event_json(event, self.lang, self.show_passwords))

    def started(self, tool: str, interfaces: tuple[str, ...], capture_filter: str) -> None:
        self.emit({"event": "capture-started", "time": time.time(), "tool": tool, "interfaces": list(interfaces),
                   "filter": capture_filter})

    def summary(self, result: LiveResult, sessions: int, problems: int) -> None:
        self.emit({"event": "summary", "time": time.time(), "stopped": result.stopped,
                   "seconds": round(result.seconds, 3), "sessions": sessions, "problems": problems,
                   "packets": result.packets,
                   "tool_stats": {i: {"captured": s.captured, "received": s.received, "dropped": s.dropped}
                                  for i, s in result.stats.items()},
                   "dropped": result.dropped, "backlog_peak": result.backlog_peak, "written": result.written,
                   "error": result.error})


def event_json(event: Event, lang: str, show_passwords: bool = False) -> dict[str, Any]:
    if isinstance(event, SessionStarted):
        s = event.session
        return {"event": "session-started", "time": event.ts, "session": s.index, "client": endpoint_json(s.client),
                "server": endpoint_json(s.server), "capture": s.file}
    if isinstance(event, ConnectionDecided):
        t = event.transfer
        return {"event": "connection", "time": event.ts, "session": event.session.index,
                "kind": "control" if t is None else "data", "transfer": None if t is None else t.index,
                "method": None if t is None else t.method,
                "announced": None if t is None else endpoint_json(t.announced),
                "command": None if t is None else t.command, "fate": event.fate, "decided_by": event.by,
                "data": conn_json(event.conn)}
    if isinstance(event, SessionEnded):
        return {"event": "session", "time": event.ts, "reason": event.reason, "open": event.reason == "capture-end",
                "session": session_json(event.session, lang, show_passwords)}
    return {"event": "nat-pair", "time": event.ts, **nat_pair_json(event.pair, lang)}
