"""The facts an analysis produces: sessions, their command/reply log, transfers and data connections, findings.

Plain data, no rendering: the text, JSON and HTML renderers all read these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ftpkit.diagnosis import Finding

Side = Literal["client", "server", "note"]
ResetBy = Literal["initiator", "responder"]
Fate = Literal["established", "refused", "syn-unanswered", "never-attempted", "not-captured", "unknown"]
PROBLEM_SEVERITIES = frozenset({"warn", "fail"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(slots=True)
class LogEntry:
    """One line of the control conversation: a command, a reply, or a note (``note`` names what happened)."""

    ts: float
    side: Side
    text: str  # command (password masked unless asked) or the reply's first line
    verb: str | None = None
    arg: str | None = None
    code: int | None = None
    lines: tuple[str, ...] = ()  # every line of a multi-line reply
    delay: float | None = None  # replies: seconds since the command they answer
    answers: str | None = None  # replies: the verb they answer
    computation: str | None = None  # PORT and 227: ``156*256+65 = 40001``
    note: str | None = None  # notes: gap, unparsed, encrypted, too-long, malformed
    size: int = 0  # notes: bytes


@dataclass(slots=True)
class DataConn:
    """A data connection as seen in the capture, reduced to counters (its payload is never kept)."""

    initiator: Endpoint
    responder: Endpoint
    syn_seen: bool
    syn_ts: float | None
    syns: int  # SYNs from the initiator (1 + retransmissions)
    synack: bool
    rst_by: ResetBy | None
    first_ts: float
    last_ts: float
    bytes_from_initiator: int
    bytes_from_responder: int
    data_first_ts: float | None
    data_last_ts: float | None
    closed: bool

    @property
    def retransmissions(self) -> int:
        return max(0, self.syns - 1)

    @property
    def fate(self) -> Fate:
        if self.synack or self.bytes_from_responder or self.bytes_from_initiator:
            return "established"
        if self.rst_by == "responder":
            return "refused"
        if self.syn_seen:
            return "syn-unanswered"
        return "unknown"

    @property
    def duration(self) -> float:
        if self.data_first_ts is None or self.data_last_ts is None:
            return 0.0
        return self.data_last_ts - self.data_first_ts


@dataclass(slots=True)
class Transfer:
    """A data-connection announcement, the command that used it, the connection(s) seen and the final reply."""

    index: int
    method: str | None = None  # PORT, EPRT, PASV, EPSV; None when the announcement is not in the capture
    announce_ts: float | None = None
    announce_text: str | None = None  # the PORT/EPRT command or the 227/229 reply, verbatim
    announced: Endpoint | None = None
    computation: str | None = None
    announce_reply: tuple[int, str] | None = None  # the reply to PORT/EPRT/PASV/EPSV
    command: str | None = None  # RETR, STOR, LIST, ...
    arg: str | None = None
    command_ts: float | None = None
    preliminary: int | None = None
    final: tuple[int, str] | None = None
    final_ts: float | None = None
    connections: list[DataConn] = field(default_factory=list)
    upload: bool = False  # STOR, STOU, APPE: the client sends

    @property
    def active(self) -> bool:
        return self.method in ("PORT", "EPRT")

    @property
    def connection(self) -> DataConn | None:
        """The connection that matters: the established one, else the last attempt."""
        for conn in self.connections:
            if conn.fate == "established":
                return conn
        return self.connections[-1] if self.connections else None

    @property
    def fate(self) -> Fate:
        conn = self.connection
        if conn is not None:
            return conn.fate
        if self.final is not None and self.final[0] // 100 == 2:
            return "not-captured"
        return "never-attempted"

    def bytes_to_server(self) -> int:
        conn = self.connection
        if conn is None:
            return 0
        return conn.bytes_from_responder if self.active else conn.bytes_from_initiator

    def bytes_to_client(self) -> int:
        conn = self.connection
        if conn is None:
            return 0
        return conn.bytes_from_initiator if self.active else conn.bytes_from_responder


@dataclass(slots=True)
class Session:
    index: int
    file: str
    client: Endpoint
    server: Endpoint
    start: float
    end: float
    user: str | None = None
    password: str | None = None  # only with --show-passwords
    logged_in: bool = False
    login_failures: list[tuple[str, str]] = field(default_factory=list)  # (user, reply)
    log: list[LogEntry] = field(default_factory=list)
    log_dropped: int = 0
    transfers: list[Transfer] = field(default_factory=list)
    encrypted_at: float | None = None
    clear_at: float | None = None  # back in clear text after CCC
    tls_from_start: bool = False
    started_at_syn: bool = False
    greeted: bool = False
    bytes_missing: int = 0
    control: DataConn | None = None  # the control connection's own TCP facts (refused, unanswered)
    findings: list[Finding] = field(default_factory=list)
    client_isn: int | None = None  # the client's initial sequence number: a NAT keeps it, so it pairs both sides

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def still_encrypted(self) -> bool:
        """Encrypted when the session ended (AUTH TLS without CCC, or TLS from the first byte)."""
        return self.encrypted_at is not None and self.clear_at is None

    def commands(self) -> list[LogEntry]:
        return [e for e in self.log if e.side == "client"]


@dataclass(slots=True)
class NatPair:
    """The same session captured on both sides of a NAT: ``inside`` is the client's side."""

    inside: Session
    outside: Session
    rewrites: list[tuple[str, str]] = field(default_factory=list)  # (as sent, as received)
    findings: list[Finding] = field(default_factory=list)


@dataclass(slots=True)
class FileInfo:
    name: str
    format: str
    compressed: bool
    packets: int
    error: str | None = None


@dataclass(slots=True)
class Report:
    files: list[FileInfo]
    sessions: list[Session]
    nat_pairs: list[NatPair]
    lang: str
    show_passwords: bool = False
    tcp_segments: int = 0
    flows: int = 0

    @property
    def errors(self) -> list[str]:
        return [f.error for f in self.files if f.error]

    @property
    def findings(self) -> list[Finding]:
        out = [f for s in self.sessions for f in s.findings]
        out += [f for p in self.nat_pairs for f in p.findings]
        return out

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in PROBLEM_SEVERITIES]

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        return 1 if self.problems else 0
