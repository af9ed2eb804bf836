"""The packet loop of one capture file: TCP segments into flows; control connections into sessions; data
connections matched to the announcements their sessions made.

A control connection is recognised by its port (21 and ``--ftp-port``) or by its first bytes (a server greeting
``220``, a client sending ``USER``). A data connection is the first connection, after a PORT/EPRT command or a
227/229 reply and before the transfer's final reply, to the announced port on the announced address or the
address the capture shows for that side (clients that ignore a private 227 address connect there).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftpkit.capture.flows import OTHER, Flow, FlowTable
from ftpkit.capture.model import Endpoint, Session
from ftpkit.capture.packets import ACK, SUPPORTED_LINKTYPES, SYN, Segment, address, segment, tcp_header
from ftpkit.capture.records import RecordReader
from ftpkit.capture.sessions import Expectation, SessionBuilder

FTP_VERBS = frozenset({
    "USER", "PASS", "ACCT", "CWD", "CDUP", "SMNT", "QUIT", "REIN", "PORT", "PASV", "TYPE", "STRU", "MODE", "RETR",
    "STOR", "STOU", "APPE", "ALLO", "REST", "RNFR", "RNTO", "ABOR", "DELE", "RMD", "MKD", "PWD", "LIST", "NLST",
    "SITE", "SYST", "STAT", "HELP", "NOOP", "FEAT", "OPTS", "AUTH", "PBSZ", "PROT", "CCC", "EPRT", "EPSV", "MLSD",
    "MLST", "SIZE", "MDTM", "MFMT", "LANG", "HOST", "CLNT", "XCWD", "XCUP", "XPWD", "XMKD", "XRMD",
})
"""Commands that confirm a connection found by its content is FTP (an SMTP server greets with 220 too)."""
MAIL_PORTS = frozenset({25, 465, 587, 2525})
"""Ports whose 220 greeting is SMTP's: never taken for FTP by content (``--ftp-port`` still can)."""


@dataclass(frozen=True)
class Options:
    ftp_ports: frozenset[int] = frozenset({21, 990})  # 990: implicit FTPS, reported as encrypted
    show_passwords: bool = False
    lang: str | None = None
    slow_reply: float = 5.0  # seconds
    max_flows: int = 100_000
    max_log: int = 10_000  # log lines kept per session


class FileAnalysis:
    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.table = FlowTable(options.max_flows)
        self.expectations: dict[int, list[Expectation]] = {}
        self.builders: list[tuple[SessionBuilder, bool]] = []  # (builder, found by port)
        self.segments = 0
        self.unsupported: dict[int, int] = {}

    # --- the data hub the session builders talk to ----------------------------------------------------------------
    def expect(self, exp: Expectation) -> None:
        self.expectations.setdefault(exp.port, []).append(exp)

    def close(self, exp: Expectation) -> None:
        waiting = self.expectations.get(exp.port)
        if waiting and exp in waiting:
            waiting.remove(exp)
            if not waiting:
                del self.expectations[exp.port]

    # --- the loop -------------------------------------------------------------------------------------------------
    def run(self, reader: RecordReader) -> None:
        by_key = self.table.by_key
        for ts, linktype, frame in reader:
            h = tcp_header(linktype, frame)
            if h is None:
                if linktype not in SUPPORTED_LINKTYPES:
                    self.unsupported[linktype] = self.unsupported.get(linktype, 0) + 1
                continue
            self.segments += 1
            entry = by_key.get((h[0], h[2], h[1], h[3]))
            if entry is not None and h[6] & (SYN | ACK) == SYN and entry[0].finished:
                entry = None  # the same addresses and ports again, after the old connection ended: a new one
            if entry is None:
                seg = segment(frame, h)
                flow, d = self._new_flow(ts, seg), 0
                by_key = self.table.by_key  # the table may have been swept
            else:
                flow, d = entry
                flow.packet(d, ts, h[4], h[6], h[8] - h[7])
                owner = flow.owner
                if owner is OTHER or owner.__class__ is Expectation:
                    continue  # the fast path: a data connection or other traffic, counted already
                seg = segment(frame, h)
            owner = flow.owner
            if owner is None:
                if not seg.payload:
                    continue
                owner = self._probe(flow, d, seg)
            if owner.__class__ is SessionBuilder:
                owner.packet(d, ts, seg)

    def _new_flow(self, ts: float, seg: Segment) -> Flow:
        flow = Flow(Endpoint(address(seg.src), seg.sport), Endpoint(address(seg.dst), seg.dport), ts)
        self.table.add((seg.src, seg.sport, seg.dst, seg.dport), flow)
        flow.packet(0, ts, seg.seq, seg.flags, seg.size)
        # A SYN goes to the responder, a SYN-ACK comes from it; mid-connection either side may have been called.
        responders = ([0] if seg.flags & ACK else [1]) if seg.flags & SYN else [1, 0]
        ports = self.options.ftp_ports
        for r in responders:
            if flow.ep[r].port in ports:
                self._start_session(flow, server_dir=r, by_port=True)
                return flow
        for r in responders:
            if self._match(flow, r):
                return flow
        return flow

    def _match(self, flow: Flow, r: int) -> bool:
        responder, initiator = flow.ep[r], flow.ep[1 - r]
        waiting = self.expectations.get(responder.port)
        if not waiting:
            return False
        best = None
        for exp in reversed(waiting):  # the latest announcement first
            if responder.ip in exp.responder_ips:
                if initiator.ip == exp.initiator_ip:
                    best = exp
                    break
                best = best or exp
        if best is None:
            return False
        best.flows.append(flow)
        flow.owner = best
        if flow.initiator is None:
            flow.initiator = 1 - r
        return True

    def _probe(self, flow: Flow, d: int, seg: Segment) -> object:
        bit = 1 << d
        if flow.probed & bit:
            return OTHER if flow.probed == 3 else None
        flow.probed |= bit
        if flow.ep[0].port in MAIL_PORTS or flow.ep[1].port in MAIL_PORTS:
            flow.owner = OTHER
            return OTHER
        head = seg.payload[:5]
        if head[:3] == b"220" and head[3:4] in (b" ", b"-", b"\r", b"\n"):
            return self._start_session(flow, server_dir=d, by_port=False)
        if head.upper() == b"USER ":
            return self._start_session(flow, server_dir=1 - d, by_port=False)
        if flow.probed == 3:
            flow.owner = OTHER
            return OTHER
        return None

    def _start_session(self, flow: Flow, server_dir: int, by_port: bool) -> SessionBuilder:
        client, server = flow.ep[1 - server_dir], flow.ep[server_dir]
        session = Session(0, self.name, client, server, flow.first_ts, flow.last_ts)
        builder = SessionBuilder(session, flow, 1 - server_dir, self, self.options.show_passwords,
                                 self.options.max_log)
        flow.owner = builder
        self.builders.append((builder, by_port))
        return builder

    def finish(self) -> list[Session]:
        sessions = []
        for builder, by_port in self.builders:
            builder.finish()
            session = builder.session
            commands = session.commands()
            if not by_port and commands and commands[0].verb not in FTP_VERBS:
                continue  # a 220 greeting, but the client does not speak FTP (SMTP, say)
            sessions.append(session)
        return sessions
