"""One FTP control connection rebuilt from its packets: reassembly, then the protocol core does the FTP.

The client's bytes go through a :class:`~ftpkit.protocol.CommandReader`; every command is recorded as sent on a
:class:`~ftpkit.protocol.ClientConversation`, which is fed the server's bytes and pairs each reply with the command
it answers. Announcements (PORT/EPRT commands, 227/229 replies) are decoded by the protocol core's host-port codecs
and registered as expectations, so the data connection that follows can be matched to its transfer.

The builder tells its hub (the capture point it belongs to) what happens as it happens: a session found by its
content is confirmed (its first command is FTP) or rejected, a transfer's final reply came, the control connection
ended. After AUTH TLS each direction is walked record by record (:mod:`ftpkit.capture.tlsrecords`), so the clear
text after CCC is read again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from ftpkit.capture.events import EndReason
from ftpkit.capture.flows import Flow
from ftpkit.capture.model import Endpoint, LogEntry, Session, Transfer
from ftpkit.capture.packets import ACK, FIN, RST, SYN, Segment
from ftpkit.capture.reassembly import Chunk, Reassembler
from ftpkit.capture.tlsrecords import COMMAND_START, REPLY_START, TLSRecords
from ftpkit.protocol import (
    BadLine,
    ClientConversation,
    Command,
    CommandReader,
    HostPortError,
    LineTooLong,
    MalformedReply,
    Reply,
    ReplyReader,
    explain_port,
    parse_eprt,
    parse_epsv,
    parse_pasv,
    parse_port,
)
from ftpkit.protocol.conversation import TRANSFER_COMMANDS

UPLOADS = frozenset({"STOR", "STOU", "APPE"})
_TLS_RECORD = re.compile(rb"\x16\x03[\x00-\x04]")
FTP_VERBS = frozenset({
    "USER", "PASS", "ACCT", "CWD", "CDUP", "SMNT", "QUIT", "REIN", "PORT", "PASV", "TYPE", "STRU", "MODE", "RETR",
    "STOR", "STOU", "APPE", "ALLO", "REST", "RNFR", "RNTO", "ABOR", "DELE", "RMD", "MKD", "PWD", "LIST", "NLST",
    "SITE", "SYST", "STAT", "HELP", "NOOP", "FEAT", "OPTS", "AUTH", "PBSZ", "PROT", "CCC", "EPRT", "EPSV", "MLSD",
    "MLST", "SIZE", "MDTM", "MFMT", "LANG", "HOST", "CLNT", "XCWD", "XCUP", "XPWD", "XMKD", "XRMD",
})
"""Commands that confirm a connection found by its content is FTP (an SMTP server greets with 220 too)."""


@dataclass(slots=True, eq=False)
class Expectation:
    """A data connection the capture should show next: to ``port`` on one of ``responder_ips``."""

    transfer: Transfer
    port: int
    responder_ips: frozenset[str]
    initiator_ip: str
    session: Session
    flows: list[Flow] = field(default_factory=list)


class DataHub(Protocol):
    """What a session builder tells the capture point it belongs to."""

    def expect(self, exp: Expectation) -> None: ...
    def close(self, exp: Expectation) -> None: ...
    def transfer_done(self, exp: Expectation, ts: float) -> None: ...
    def confirmed(self, builder: SessionBuilder) -> None: ...
    def rejected(self, builder: SessionBuilder) -> None: ...
    def ended(self, builder: SessionBuilder, ts: float, reason: EndReason) -> None: ...


@dataclass(slots=True)
class _Sent:
    command: Command
    entry: LogEntry
    transfer: Transfer | None = None


class SessionBuilder:
    def __init__(self, session: Session, flow: Flow, client_dir: int, hub: DataHub, show_passwords: bool,
                 max_log: int, by_port: bool = True, seq: int = 0) -> None:
        self.session = session
        self.flow = flow
        self.cdir = client_dir
        self.hub = hub
        self.by_port = by_port  # found on a control port; otherwise by its content, confirmed by its first command
        self.seq = seq  # creation order
        self.done = False
        self.show_passwords = show_passwords
        self.max_log = max_log
        self.streams = (Reassembler(), Reassembler())
        for d in (0, 1):
            isn = flow.isn[d]
            if isn is not None:
                self.streams[d].next_seq = isn
                self.streams[d].started_at_syn = True
        self.resync = [not s.started_at_syn for s in self.streams]
        session.started_at_syn = flow.syns > 0 and flow.initiator == client_dir
        session.client_isn = flow.isn[client_dir]
        self.commands = CommandReader()
        self.conv = ClientConversation()
        self.sent: dict[int, _Sent] = {}
        self.current: Transfer | None = None
        self.expectations: list[Expectation] = []
        self.open: dict[int, Expectation] = {}  # id(transfer) -> its open expectation
        self.tls: list[TLSRecords | None] = [None, None]  # per direction, while it is encrypted
        self.first_bytes = [True, True]

    # --- packets ------------------------------------------------------------------------------------------------
    def packet(self, d: int, ts: float, seg: Segment) -> None:
        self.session.end = ts
        if seg.flags & SYN:
            self.streams[d].syn(seg.seq)
            if d == self.cdir and not seg.flags & ACK:
                self.session.started_at_syn = True
        if seg.flags & ACK:
            late = self.streams[1 - d].acked(seg.ack)
            if late:
                self._chunks(1 - d, ts, late)
        if seg.payload:
            self._chunks(d, ts, self.streams[d].segment(seg.seq, seg.payload))
        if seg.flags & (FIN | RST) and self.flow.finished and not self.done:
            self.hub.ended(self, ts, "reset" if self.flow.rst_dir is not None else "closed")

    @property
    def encrypted(self) -> bool:
        return self.tls[0] is not None or self.tls[1] is not None

    def last_activity(self) -> float:
        """The latest packet of the control connection or of a data connection of a transfer still running."""
        last = self.flow.last_ts
        for exp in self.open.values():
            for flow in exp.flows:
                last = max(last, flow.last_ts)
        return last

    def finish(self) -> None:
        """The session ended (or the capture did): deliver what waits behind holes, close expectations, snapshot
        data connections."""
        self.done = True
        for d in (0, 1):
            while self.streams[d].pending:
                self._chunks(d, self.session.end, self.streams[d].skip_gap())
        self.session.bytes_missing = self.streams[0].missing + self.streams[1].missing
        self.session.control = self.flow.to_data_conn()
        for exp in list(self.open.values()):
            self.hub.close(exp)
        self.open.clear()
        for exp in self.expectations:
            exp.transfer.connections = [f.to_data_conn() for f in exp.flows]

    # --- bytes --------------------------------------------------------------------------------------------------
    def _chunks(self, d: int, ts: float, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            if chunk.gap:
                self._gap(d, ts, chunk.gap)
            data = chunk.data
            if self.first_bytes[d]:
                self.first_bytes[d] = False
                if self.tls[d] is None and _TLS_RECORD.match(data):
                    self.session.tls_from_start = True
                    self._encrypted(ts)
            tls = self.tls[d]
            if tls is not None:
                clear = tls.feed(data)
                if clear is None:
                    continue
                self._clear_again(d, ts)
                data = clear
            if self.resync[d]:
                data = self._resync(d, data)
                if not data:
                    continue
            if d == self.cdir:
                self._client_bytes(ts, data)
            else:
                self._server_bytes(ts, data)

    def _resync(self, d: int, data: bytes) -> bytes:
        """Mid-stream (capture started late, or bytes missing): start at the first line that looks whole."""
        pattern = COMMAND_START if d == self.cdir else REPLY_START
        if pattern.match(data):
            self.resync[d] = False
            return data
        newline = data.find(b"\n")
        if newline < 0:
            return b""
        self.resync[d] = False  # what follows a line ending starts a line
        return data[newline + 1:]

    def _gap(self, d: int, ts: float, size: int) -> None:
        self._log(LogEntry(ts, "note", "", note="gap-client" if d == self.cdir else "gap-server", size=size))
        tls = self.tls[d]
        if tls is not None:
            tls.lost = True  # record boundaries are unknown from here on
        if d == self.cdir:
            self.commands = CommandReader()
        else:
            self.conv.reader = ReplyReader()
        self.resync[d] = True

    def _client_bytes(self, ts: float, data: bytes) -> None:
        for event in self.commands.feed(data):
            if isinstance(event, Command):
                self._command(ts, event)
            elif isinstance(event, BadLine):
                self._log(LogEntry(ts, "note", event.raw.decode("utf-8", "replace")[:200], note="bad-command"))
            elif isinstance(event, LineTooLong):
                self._log(LogEntry(ts, "note", "", note="line-too-long", size=event.limit))
            if self.tls[self.cdir] is not None or self.done:
                return

    def _server_bytes(self, ts: float, data: bytes) -> None:
        for event in self.conv.receive_data(data):
            if isinstance(event, MalformedReply):
                self._log(LogEntry(ts, "note", event.raw.decode("utf-8", "replace")[:200], note="bad-reply"))
            else:
                self._answer(ts, event.command, event.reply)
            if self.tls[1 - self.cdir] is not None:
                return

    def _log(self, entry: LogEntry) -> None:
        if len(self.session.log) < self.max_log:
            self.session.log.append(entry)
        else:
            self.session.log_dropped += 1

    def _encrypted(self, ts: float) -> None:
        self.tls = [TLSRecords(client=d == self.cdir) for d in (0, 1)]
        self.session.encrypted_at = ts
        self.session.clear_at = None
        self._log(LogEntry(ts, "note", "", note="encrypted"))

    def _clear_again(self, d: int, ts: float) -> None:
        """Clear text again in direction ``d`` (CCC): its reader starts afresh. Once the client's commands are
        clear the session is readable again, and the pairing of replies starts afresh (what was said inside TLS is
        unknown); the server's replies follow as soon as they are clear too."""
        self.tls[d] = None
        self.resync[d] = False
        if d == self.cdir:
            self.commands = CommandReader()
            self.conv = ClientConversation()
            self.conv.greeted = True
            self.sent.clear()
            self.session.clear_at = ts
            self._log(LogEntry(ts, "note", "", note="clear-again"))
        else:
            self.conv.reader = ReplyReader()

    # --- commands -----------------------------------------------------------------------------------------------
    def _command(self, ts: float, cmd: Command) -> None:
        if not self.by_port and self.session.index == 0 and not self.session.commands():
            if cmd.verb not in FTP_VERBS:
                self.hub.rejected(self)  # a 220 greeting, but the client does not speak FTP (SMTP, say)
                return
            self.hub.confirmed(self)
        self.conv.sent(cmd)
        text = str(cmd) if self.show_passwords else cmd.masked()
        arg = text.partition(" ")[2] if cmd.arg is not None else None
        entry = LogEntry(ts, "client", text, verb=cmd.verb, arg=arg)
        info = _Sent(cmd, entry)
        self.sent[id(cmd)] = info
        verb = cmd.verb
        if verb == "USER":
            self.session.user = cmd.arg
        elif verb == "PASS" and self.show_passwords:
            self.session.password = cmd.arg
        elif verb in ("PORT", "EPRT"):
            info.transfer = self._announce_active(ts, cmd, entry)
        elif verb in TRANSFER_COMMANDS:
            info.transfer = self._transfer_command(ts, cmd)
        self._log(entry)

    def _announce_active(self, ts: float, cmd: Command, entry: LogEntry) -> Transfer | None:
        try:
            hp = parse_port(cmd.arg or "") if cmd.verb == "PORT" else parse_eprt(cmd.arg or "")
        except HostPortError as exc:
            self._log(LogEntry(ts, "note", str(exc), note="bad-announcement"))
            return None
        computation = explain_port(hp.port) if cmd.verb == "PORT" else None
        entry.computation = computation
        transfer = Transfer(len(self.session.transfers) + 1, cmd.verb, ts, str(cmd), Endpoint(hp.host, hp.port),
                            computation)
        self._new_transfer(transfer, hp.port, {hp.host, self.session.client.ip}, self.session.server.ip)
        return transfer

    def _announce_passive(self, ts: float, verb: str, text: str, entry: LogEntry) -> Transfer | None:
        try:
            if verb == "PASV":
                hp = parse_pasv(text)
                host, port = hp.host, hp.port
            else:
                host, port = self.session.server.ip, parse_epsv(text)
        except HostPortError as exc:
            self._log(LogEntry(ts, "note", str(exc), note="bad-announcement"))
            return None
        computation = explain_port(port) if verb == "PASV" else None
        entry.computation = computation
        transfer = Transfer(len(self.session.transfers) + 1, verb, ts, entry.text, Endpoint(host, port), computation)
        self._new_transfer(transfer, port, {host, self.session.server.ip}, self.session.client.ip)
        return transfer

    def _new_transfer(self, transfer: Transfer, port: int, responders: set[str], initiator: str) -> None:
        previous = self.current
        if previous is not None and previous.command is None:
            self._close(previous)  # announced, never used: a new announcement replaces it
        self.session.transfers.append(transfer)
        self.current = transfer
        exp = Expectation(transfer, port, frozenset(responders), initiator, self.session)
        self.expectations.append(exp)
        self.open[id(transfer)] = exp
        self.hub.expect(exp)

    def _close(self, transfer: Transfer, ts: float | None = None) -> None:
        """No more connections for ``transfer``; ``ts``: its final reply came then, so its attempts are decided."""
        exp = self.open.pop(id(transfer), None)
        if exp is not None:
            self.hub.close(exp)
            if ts is not None:
                self.hub.transfer_done(exp, ts)

    def _transfer_command(self, ts: float, cmd: Command) -> Transfer:
        transfer = self.current
        if transfer is None or transfer.command is not None:
            transfer = Transfer(len(self.session.transfers) + 1)  # its announcement is not in the capture
            self.session.transfers.append(transfer)
            self.current = transfer
        transfer.command, transfer.arg, transfer.command_ts = cmd.verb, cmd.arg, ts
        transfer.upload = cmd.verb in UPLOADS
        return transfer

    # --- replies ------------------------------------------------------------------------------------------------
    def _answer(self, ts: float, cmd: Command | None, reply: Reply) -> None:
        info = self.sent.get(id(cmd)) if cmd is not None else None
        entry = LogEntry(ts, "server", f"{reply.code} {reply.first}".rstrip(), code=reply.code, lines=reply.lines)
        if info is None:
            if reply.code == 220:
                self.session.greeted = True
            self._log(entry)
            return
        verb = info.command.verb
        entry.delay = ts - info.entry.ts
        entry.answers = verb
        if reply.is_final:
            del self.sent[id(cmd)]
        transfer = info.transfer
        if verb in ("PASV", "EPSV") and reply.code in (227, 229):
            self._announce_passive(ts, verb, reply.text, entry)
        elif verb in ("PORT", "EPRT") and transfer is not None:
            transfer.announce_reply = (reply.code, reply.text)
            if reply.is_error:
                self._close(transfer, ts)
        elif verb in ("USER", "PASS") and reply.code == 230:
            self.session.logged_in = True
        elif verb in ("USER", "PASS") and reply.code == 530:
            self.session.login_failures.append((self.session.user or "", f"{reply.code} {reply.first}"))
        elif transfer is not None and verb in TRANSFER_COMMANDS:
            if reply.is_preliminary:
                transfer.preliminary = reply.code
            else:
                transfer.final, transfer.final_ts = (reply.code, reply.text), ts
                self._close(transfer, ts)
                if self.current is transfer:
                    self.current = None
        self._log(entry)
        ssl = (info.command.arg or "").upper() == "SSL"
        if verb == "AUTH" and (reply.code == 234 or (reply.code == 334 and ssl)):
            self._encrypted(ts)  # 334: what some old servers answer to AUTH SSL
