"""Command lines: parsing what a client sends and formatting what a client sends.

The reader is incremental and never blocks: feed it bytes as they arrive and collect the events. It accepts
CRLF and bare LF, upper-cases verbs (``TYPE i`` from a printer works), keeps every byte of the argument
(spaces included), tolerates Telnet IAC sequences (RFC 854, as RFC 959 asks) and enforces a line-length limit
without ever buffering more than that limit.

The abort of RFC 959 §4.1.3 (Telnet IP, then the Synch: IAC DM with the DM as TCP urgent data) reaches a
server in three shapes, depending on which byte the client marked urgent and whether the kernel delivers it in
line: ``IAC IP IAC DM ABOR`` (in line), ``IAC IP DM ABOR`` (BSD ftp, tnftp, inetutils-ftp send ``IAC IP IAC`` as
urgent data and then ``DM ABOR``; the kernel takes their last IAC out of band) and ``IAC IP IAC ABOR`` (ncftp sends
``IAC DM`` as urgent data; the DM goes out of band). So a lone IAC before a byte that is no Telnet command is kept
as data, and DM and IAC bytes in front of the verb are dropped: all three give ``ABOR``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftpkit.protocol.errors import CommandError

DEFAULT_MAX_LINE = 4096
"""Longest accepted command line in bytes, without the line ending (PATH_MAX plus a verb)."""

ENCODING = "utf-8"
ERRORS = "surrogateescape"
"""Arguments are decoded as UTF-8 with surrogateescape, so any byte sequence (Shift_JIS names from an old
client, too) round-trips to the file system byte-exact."""

IAC = 0xFF
DM = 0xF2  # Telnet Data Mark, the end of a Synch
_TELNET_COMMANDS = 0xF0  # SE (240) to IAC (255): the bytes that make an IAC sequence
_IAC_OPTION_VERBS = frozenset((251, 252, 253, 254))  # WILL WONT DO DONT take one option byte
_BEFORE_VERB = bytes((DM, IAC))
"""Telnet bytes left in front of a verb when their partner went out of band as TCP urgent data: dropped."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command: the verb upper-cased, the argument verbatim (``None`` when there is none)."""

    verb: str
    arg: str | None = None

    def __str__(self) -> str:
        return self.verb if self.arg is None else f"{self.verb} {self.arg}"

    def masked(self) -> str:
        """The command as it may be logged: passwords replaced by asterisks."""
        if self.verb in ("PASS", "ACCT") and self.arg is not None:
            return f"{self.verb} ****"
        return str(self)

    def to_bytes(self, encoding: str = ENCODING) -> bytes:
        return format_command(self.verb, self.arg, encoding)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a command. ``reason`` says why, in words fit for a 500 reply."""

    reason: str
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line longer than the limit; it was discarded up to its line ending."""

    limit: int


CommandEvent = Command | BadLine | LineTooLong


def _valid_verb(verb: str) -> bool:
    """A letter, then up to seven letters or digits: RFC 959's verbs and the extensions with digits (XSHA256)."""
    return 1 <= len(verb) <= 8 and verb.isascii() and verb[0].isalpha() and verb.isalnum()


def parse_command_line(line: bytes, encoding: str = ENCODING) -> Command | BadLine:
    """Parse one line (without its line ending and without Telnet sequences)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    line = line.lstrip(_BEFORE_VERB)
    if not line.strip():
        return BadLine("empty command line", line)
    verb_bytes, sep, arg_bytes = line.partition(b" ")
    try:
        verb = verb_bytes.decode("ascii")
    except UnicodeDecodeError:
        return BadLine("command verb is not ASCII", line)
    if not _valid_verb(verb):
        return BadLine("command verb must be a letter and up to 7 more letters or digits", line)
    if not sep:
        return Command(verb.upper())
    return Command(verb.upper(), arg_bytes.decode(encoding, ERRORS))


class CommandReader:
    """Incremental reader of command lines (the server side of a control connection)."""

    __slots__ = ("_buf", "_discarding", "_telnet", "encoding", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, encoding: str = ENCODING) -> None:
        if max_line < 16:
            raise ValueError("max_line must be at least 16")
        self.max_line = max_line
        self.encoding = encoding
        self._buf = bytearray()
        self._telnet = 0  # 0: data; 1: after IAC; 2: after IAC WILL/WONT/DO/DONT
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for a line ending."""
        return len(self._buf)

    def _strip_telnet(self, data: bytes) -> bytes:
        if self._telnet == 0 and IAC not in data:
            return data
        out = bytearray()
        for byte in data:
            if self._telnet == 1:
                if byte == IAC:
                    out.append(IAC)  # IAC IAC is a literal 0xFF
                    self._telnet = 0
                elif byte in _IAC_OPTION_VERBS:
                    self._telnet = 2
                elif byte >= _TELNET_COMMANDS:
                    self._telnet = 0  # IP, DM, AYT, ... : a two-byte sequence, dropped
                else:
                    # No Telnet command follows: a lone IAC (its partner went out of band, or a client did not
                    # double a 0xFF byte). Both bytes are data; the byte after it may be a line's end.
                    out.append(IAC)
                    out.append(byte)
                    self._telnet = 0
            elif self._telnet == 2:
                self._telnet = 0
            elif byte == IAC:
                self._telnet = 1
            else:
                out.append(byte)
        return bytes(out)

    def feed(self, data: bytes) -> list[CommandEvent]:
        """Take the bytes that arrived; return the events of every line they complete."""
        events: list[CommandEvent] = []
        data = self._strip_telnet(data)
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            if end < 0:
                chunk = data[start:]
                if not self._discarding:
                    self._buf += chunk
                    if len(self._buf) > self.max_line + 1:  # +1: a CR may still be followed by LF
                        self._buf.clear()
                        self._discarding = True
                break
            chunk = data[start:end]
            start = end + 1
            if self._discarding:
                self._discarding = False
                events.append(LineTooLong(self.max_line))
                continue
            line = bytes(self._buf + chunk) if self._buf else chunk
            self._buf.clear()
            if len(line.removesuffix(b"\r")) > self.max_line:
                events.append(LineTooLong(self.max_line))
            else:
                events.append(parse_command_line(line, self.encoding))
        return events


def format_command(verb: str, arg: str | None = None, encoding: str = ENCODING) -> bytes:
    """Format a command line with CRLF. Refuses what would inject a second command."""
    if not _valid_verb(verb):
        raise CommandError(f"invalid command verb {verb!r}")
    line = verb.upper() if arg is None else f"{verb.upper()} {arg}"
    if "\r" in line or "\n" in line:
        raise CommandError("a command argument may not contain CR or LF")
    try:
        raw = line.encode(encoding, ERRORS)
    except (UnicodeEncodeError, LookupError) as exc:
        raise CommandError(f"cannot encode command in {encoding}: {exc}") from None
    # RFC 2640 §3.1: a 0xFF byte inside a path travels as IAC IAC.
    return raw.replace(b"\xff", b"\xff\xff") + b"\r\n"
