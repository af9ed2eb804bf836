"""The JSON report. Field names follow Wireshark's FTP dissector where one fits (``ftp.request.command``,
``ftp.response.code``, ``ftp.active.port``, ``ftp.passive.port``, ...); the schema is in the README."""

from __future__ import annotations

from typing import Any

from ftpkit.capture.diagram import clock
from ftpkit.capture.model import DataConn, Endpoint, LogEntry, NatPair, Report, Session, Transfer

SCHEMA = 1


def _ep(ep: Endpoint | None) -> dict[str, Any] | None:
    return None if ep is None else {"ip": ep.ip, "port": ep.port}


def _reply(reply: tuple[int, str] | None) -> dict[str, Any] | None:
    return None if reply is None else {"ftp.response.code": reply[0], "ftp.response.arg": reply[1]}


def _entry(e: LogEntry, start: float) -> dict[str, Any]:
    out: dict[str, Any] = {"time": e.ts, "offset": round(e.ts - start, 6), "side": e.side}
    if e.side == "client":
        out["ftp.request.command"] = e.verb
        out["ftp.request.arg"] = e.arg
    elif e.side == "server":
        out["ftp.response.code"] = e.code
        out["ftp.response.arg"] = "\n".join(e.lines)
        out["delay"] = None if e.delay is None else round(e.delay, 6)
        out["answers"] = e.answers
    else:
        out["note"] = e.note
        out["text"] = e.text
        out["size"] = e.size
    if e.computation:
        out["computation"] = e.computation
    return out


def _conn(c: DataConn) -> dict[str, Any]:
    return {
        "initiator": _ep(c.initiator), "responder": _ep(c.responder), "from_port_20": c.initiator.port == 20,
        "fate": c.fate, "syn_seen": c.syn_seen, "syn_time": c.syn_ts, "syns": c.syns,
        "retransmissions": c.retransmissions, "synack": c.synack, "rst_by": c.rst_by,
        "bytes_from_initiator": c.bytes_from_initiator, "bytes_from_responder": c.bytes_from_responder,
        "duration": round(c.duration, 6), "start": c.first_ts, "end": c.last_ts,
    }


def _transfer(t: Transfer, s: Session) -> dict[str, Any]:
    conn = t.connection
    duration = conn.duration if conn else 0.0
    moved = t.bytes_to_client() + t.bytes_to_server()
    out: dict[str, Any] = {
        "index": t.index, "ftp.request.command": t.command, "ftp.request.arg": t.arg, "method": t.method,
        "announcement": t.announce_text, "announced": _ep(t.announced), "computation": t.computation,
        "announce_reply": _reply(t.announce_reply), "preliminary": t.preliminary, "final": _reply(t.final),
        "fate": t.fate, "bytes_to_client": t.bytes_to_client(), "bytes_to_server": t.bytes_to_server(),
        "duration": round(duration, 6), "rate": round(moved / duration, 1) if duration > 0 else None,
        "data": _conn(conn) if conn else None, "attempts": [_conn(c) for c in t.connections],
    }
    out.update(wireshark_fields(t, s.client.ip, s.server.ip))
    return out


WIRESHARK = {"PORT": ("ftp.active.cip", "ftp.active.port", "ftp.active.nat"),
             "PASV": ("ftp.passive.ip", "ftp.passive.port", "ftp.passive.nat"),
             "EPRT": ("ftp.eprt.ip", "ftp.eprt.port", None), "EPSV": (None, "ftp.epsv.port", None)}


def wireshark_fields(t: Transfer, client: str | None = None, server: str | None = None) -> dict[str, Any]:
    """The announcement as Wireshark's FTP dissector names it (``*.nat``: the address differs from the sender's)."""
    if t.method is None or t.announced is None:
        return {}
    ip_field, port_field, nat_field = WIRESHARK[t.method]
    out: dict[str, Any] = {port_field: t.announced.port}
    if ip_field:
        out[ip_field if ":" not in t.announced.ip or t.method != "EPRT" else "ftp.eprt.ipv6"] = t.announced.ip
    sender = client if t.active else server
    if nat_field and sender is not None:
        out[nat_field] = t.announced.ip != sender
    return out


def session_json(s: Session, lang: str, show_passwords: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": s.index, "file": s.file, "client": _ep(s.client), "server": _ep(s.server), "user": s.user,
        "logged_in": s.logged_in, "start": s.start, "start_utc": clock(s.start), "duration": round(s.duration, 6),
        "started_at_syn": s.started_at_syn, "encrypted_at": s.encrypted_at, "clear_at": s.clear_at,
        "bytes_missing": s.bytes_missing,
        "log_dropped": s.log_dropped, "login_failures": len(s.login_failures),
        "log": [_entry(e, s.start) for e in s.log],
        "transfers": [_transfer(t, s) for t in s.transfers],
        "findings": [f.to_json(lang) for f in s.findings],
    }
    if show_passwords:
        out["password"] = s.password
    return out


def to_json(report: Report) -> dict[str, Any]:
    lang = report.lang
    return {
        "tool": "ftpkit analyze", "schema": SCHEMA, "lang": lang,
        "files": [{"name": f.name, "format": f.format, "compressed": f.compressed, "packets": f.packets,
                   "error": f.error} for f in report.files],
        "summary": {"sessions": len(report.sessions), "transfers": sum(len(s.transfers) for s in report.sessions),
                    "findings": len(report.findings), "problems": len(report.problems),
                    "exit_code": report.exit_code, "tcp_segments": report.tcp_segments,
                    "tcp_connections": report.flows},
        "sessions": [session_json(s, lang, report.show_passwords) for s in report.sessions],
        "nat_pairs": [nat_pair_json(p, lang) for p in report.nat_pairs],
    }


def nat_pair_json(p: NatPair, lang: str) -> dict[str, Any]:
    return {"inside": p.inside.index, "outside": p.outside.index,
            "rewrites": [{"sent": a, "received": b} for a, b in p.rewrites],
            "findings": [f.to_json(lang) for f in p.findings]}


def conn_json(c: DataConn) -> dict[str, Any]:
    return _conn(c)


def endpoint_json(ep: Endpoint | None) -> dict[str, Any] | None:
    return _ep(ep)
