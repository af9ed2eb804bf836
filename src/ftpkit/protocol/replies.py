"""Replies: formatting what a server sends and parsing what a client receives (RFC 959 §4.2).

A reply is a three-digit code and one or more lines of text. Multi-line replies start with ``xyz-`` and end
with the first line that starts with the same code and a space (``211-`` ... ``211 End``). The parser is
incremental, accepts CRLF and bare LF, and reports lines that are not replies instead of raising, so a client
or a capture analyzer can say what it saw and carry on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ftpkit.protocol.commands import ENCODING, ERRORS
from ftpkit.protocol.errors import ReplyError

DEFAULT_MAX_REPLY = 1 << 20
"""Largest reply the parser buffers (a STAT listing over the control connection can be long)."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...] = ("",)

    def __post_init__(self) -> None:
        if not 100 <= self.code <= 599:
            raise ReplyError(f"reply code {self.code} is not between 100 and 599")
        if not self.lines:
            raise ReplyError("a reply needs at least one line")

    @classmethod
    def of(cls, code: int, text: str | Iterable[str] = "") -> Reply:
        if isinstance(text, str):
            return cls(code, (text,) if "\n" not in text else tuple(text.split("\n")))
        return cls(code, tuple(text))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def first(self) -> str:
        return self.lines[0]

    @property
    def kind(self) -> int:
        """The first digit: 1 preliminary, 2 completion, 3 intermediate, 4 transient, 5 permanent."""
        return self.code // 100

    @property
    def is_preliminary(self) -> bool:
        return self.kind == 1

    @property
    def is_final(self) -> bool:
        return self.kind != 1

    @property
    def is_success(self) -> bool:
        return self.kind in (2, 3)

    @property
    def is_error(self) -> bool:
        return self.kind in (4, 5)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    def to_bytes(self, encoding: str = ENCODING) -> bytes:
        return format_reply(self, encoding)


@dataclass(frozen=True, slots=True)
class MalformedReply:
    """A line (or an unterminated multi-line reply that grew too large) that is not a valid reply."""

    reason: str
    raw: bytes


ReplyEvent = Reply | MalformedReply

_ESCAPES = str.maketrans({"\r": "\\r", "\n": "\\n", "\0": "\\0"})


def printable(text: str) -> str:
    """Text fit for one reply line although it echoes what a peer sent (a path, an argument): CR, LF and NUL
    become the visible escapes ``\\r``, ``\\n`` and ``\\0``, so the line can neither be refused by
    :func:`format_reply` nor end early."""
    return text.translate(_ESCAPES)


def format_reply(reply: Reply, encoding: str = ENCODING) -> bytes:
    lines = reply.lines
    if len(lines) == 1:  # most replies: one line, no list to build
        line = lines[0]
        if "\r" in line or "\n" in line:
            raise ReplyError("a reply line may not contain CR or LF")
        try:
            return f"{reply.code} {line}\r\n".encode(encoding, ERRORS)
        except (UnicodeEncodeError, LookupError) as exc:
            raise ReplyError(f"cannot encode reply in {encoding}: {exc}") from None
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ReplyError("a reply line may not contain CR or LF")
    code = str(reply.code)
    out = [f"{code}-{lines[0]}"]
    for line in lines[1:-1]:
        # A middle line that looks like the closing line (``211 x``, or ``211`` alone, which the reader
        # also takes as the end) would end the reply early: indent it.
        out.append(" " + line if line == code or line.startswith(code + " ") else line)
    out.append(f"{code} {lines[-1]}")
    try:
        return ("\r\n".join(out) + "\r\n").encode(encoding, ERRORS)
    except (UnicodeEncodeError, LookupError) as exc:
        raise ReplyError(f"cannot encode reply in {encoding}: {exc}") from None


def _code_of(line: bytes) -> int | None:
    if len(line) >= 3 and line[:3].isdigit() and line[:1] in b"12345":
        return int(line[:3])
    return None


class ReplyReader:
    """Incremental reader of replies (the client side of a control connection)."""

    def __init__(self, max_reply: int = DEFAULT_MAX_REPLY, encoding: str = ENCODING) -> None:
        self.max_reply = max_reply
        self.encoding = encoding
        self._buf = bytearray()
        self._code: int | None = None  # inside a multi-line reply with this code
        self._lines: list[str] = []
        self._size = 0
        self._discarding = False  # the rest of an over-long line is skipped up to its LF

    def _decode(self, raw: bytes) -> str:
        return raw.decode(self.encoding, ERRORS)

    def _line(self, line: bytes) -> ReplyEvent | None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._code is not None:
            self._size += len(line)
            code = _code_of(line)
            if code == self._code and line[3:4] in (b" ", b""):
                self._lines.append(self._decode(line[4:]))
                reply = Reply(self._code, tuple(self._lines))
                self._code, self._lines, self._size = None, [], 0
                return reply
            if self._size > self.max_reply:
                code, self._code, self._lines, self._size = self._code, None, [], 0
                return MalformedReply(f"multi-line {code} reply longer than {self.max_reply} bytes", line)
            self._lines.append(self._decode(line))
            return None
        code = _code_of(line)
        if code is None:
            if not line:
                return None  # a stray empty line: ignore, as most clients do
            return MalformedReply("line does not start with a three-digit reply code", line)
        sep = line[3:4]
        if sep == b"-":
            self._code, self._lines, self._size = code, [self._decode(line[4:])], len(line)
            return None
        if sep in (b" ", b""):
            return Reply(code, (self._decode(line[4:]),))
        return MalformedReply("reply code not followed by a space or a hyphen", line)

    def _too_long(self, raw: bytes) -> MalformedReply:
        # The same event whether the line arrived whole or overflowed the buffer chunk by chunk.
        self._code, self._lines, self._size = None, [], 0
        return MalformedReply(f"line longer than {self.max_reply} bytes", raw[: min(200, self.max_reply)])

    def feed(self, data: bytes) -> list[ReplyEvent]:
        events: list[ReplyEvent] = []
        self._buf += data
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                break
            raw = bytes(self._buf[start:end])
            start = end + 1
            if self._discarding:
                self._discarding = False  # the end of a line already reported as too long
                continue
            if len(raw.removesuffix(b"\r")) > self.max_reply:
                events.append(self._too_long(raw))
                continue
            event = self._line(raw)
            if event is not None:
                events.append(event)
        del self._buf[:start]
        if len(self._buf) > self.max_reply + 1:  # +1: a CR may still be followed by LF
            if not self._discarding:
                events.append(self._too_long(bytes(self._buf)))
                self._discarding = True
            self._buf.clear()
        return events

    @property
    def in_reply(self) -> bool:
        """True while a multi-line reply or a partial line is buffered (or an over-long line is skipped)."""
        return self._code is not None or bool(self._buf) or self._discarding
