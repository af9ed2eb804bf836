"""State machines of a control conversation, one per side, in the style of h11: no I/O, only bookkeeping.

:class:`ServerConversation` turns received bytes into commands and decides which command may be handled now:
commands are answered strictly in order, and while a transfer runs only ABOR and STAT are taken (RFC 959
§4.1.3); everything else waits until the transfer's final reply. :class:`ClientConversation` pairs every reply
with the command it answers (preliminary 1xx replies keep the command open; the greeting and a spontaneous 421
answer no command).
The capture analyzer drives a :class:`ClientConversation` with both directions of a recorded session.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from ftpkit.protocol.commands import (
    DEFAULT_MAX_LINE,
    ENCODING,
    BadLine,
    Command,
    CommandEvent,
    CommandReader,
    LineTooLong,
    format_command,
)
from ftpkit.protocol.errors import StateError
from ftpkit.protocol.replies import DEFAULT_MAX_REPLY, MalformedReply, Reply, ReplyReader

TRANSFER_COMMANDS = frozenset({"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"})
"""Commands that move data over a data connection and may get a 1xx reply before their final one."""

DURING_TRANSFER = frozenset({"ABOR", "STAT", "QUIT"})
"""Commands a server takes while a transfer is under way; all others wait for it to end."""

_STATUS_CODES = frozenset({211, 212, 213})
"""Final replies to STAT that no transfer command ever gets: they pair with a STAT sent mid-transfer."""

_GREETING_CODES = frozenset({120, 220, 421})


class Phase(Enum):
    GREETING = "greeting"  # nothing sent yet: the 220 comes first
    READY = "ready"
    CLOSED = "closed"  # after 221 or 421: nothing more is sent


class ServerConversation:
    __slots__ = ("_head", "_inbox", "_open", "_preliminary", "encoding", "phase", "reader")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, encoding: str = ENCODING) -> None:
        self.reader = CommandReader(max_line, encoding)
        self.encoding = encoding
        self.phase = Phase.GREETING
        # Received, not taken: ``_inbox[_head:]`` (a list and an index, not a deque: an empty deque is 760 bytes,
        # and an idle session is held by the thousand).
        self._inbox: list[CommandEvent] = []
        self._head = 0
        self._open: list[CommandEvent] = []  # taken, final reply not sent yet; [transfer, ABOR/STAT] at most
        self._preliminary: CommandEvent | None = None  # the transfer whose 1xx reply went out

    # --- input ----------------------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.phase is not Phase.CLOSED:
            self._inbox.extend(self.reader.feed(data))

    def discard_pending(self) -> int:
        """Drop commands received but not taken, and any partial line: what a client pipelined in clear behind
        AUTH TLS must not be executed after the handshake (CVE-2011-0411 style injection). Returns how many."""
        dropped = self.waiting + (1 if self.reader.buffered else 0)
        self._inbox.clear()
        self._head = 0
        self.reader = CommandReader(self.reader.max_line, self.reader.encoding)
        return dropped

    @property
    def waiting(self) -> int:
        """Commands received and not yet taken."""
        return len(self._inbox) - self._head

    @property
    def transfer(self) -> Command | None:
        """The transfer command in progress (taken, final reply not yet sent), if any."""
        if self._open and isinstance(self._open[0], Command) and self._open[0].verb in TRANSFER_COMMANDS:
            return self._open[0]
        return None

    def awaits_reply(self, event: CommandEvent) -> bool:
        """Whether ``event`` was taken and has not had its final reply yet."""
        for item in self._open:  # noqa: SIM110 - two items at most: a plain loop costs less than any()
            if item is event:
                return True
        return False

    def next_event(self) -> CommandEvent | None:
        """The next command to handle now, or ``None`` if there is none or it must wait for a transfer."""
        if self.phase is not Phase.READY or self._head >= len(self._inbox):
            return None
        if self._open:
            head = self._inbox[self._head]
            if self.transfer is None or len(self._open) > 1:
                return None
            if not (isinstance(head, Command) and head.verb in DURING_TRANSFER):
                return None
        event = self._inbox[self._head]
        self._head += 1
        if self._head == len(self._inbox):
            self._inbox.clear()
            self._head = 0
        elif self._head >= 1024:  # a long pipeline: drop what was taken, now and then, not at every command
            del self._inbox[:self._head]
            self._head = 0
        self._open.append(event)
        return event

    # --- output ---------------------------------------------------------------------------------------------
    def greet(self, reply: Reply) -> bytes:
        if self.phase is not Phase.GREETING:
            raise StateError("the greeting was sent already")
        if reply.code not in (220, 421, 120):
            raise StateError(f"a greeting is 220, 120 or 421, not {reply.code}")
        if reply.code != 120:
            self.phase = Phase.CLOSED if reply.code == 421 else Phase.READY
        return reply.to_bytes(self.encoding)

    def reply(self, reply: Reply, to: CommandEvent | None = None) -> bytes:
        """The bytes of a reply to ``to`` (by default the command taken last)."""
        if self.phase is not Phase.READY:
            raise StateError(f"no reply can be sent in phase {self.phase.value}")
        if not self._open:
            raise StateError("no command is waiting for a reply")
        target = self._open[-1] if to is None else to
        if not self.awaits_reply(target):
            raise StateError(f"{target} is not waiting for a reply")
        if reply.code < 200:
            if not (isinstance(target, Command) and target.verb in TRANSFER_COMMANDS):
                raise StateError(f"{target} cannot get a preliminary reply")
            if self._preliminary is target:
                raise StateError(f"{target} had its preliminary reply already")
            self._preliminary = target
        else:
            if self._open[-1] is target:
                self._open.pop()
            else:
                self._open = [item for item in self._open if item is not target]
            if self._preliminary is target:
                self._preliminary = None
            if reply.code == 221 or reply.code == 421:
                self.phase = Phase.CLOSED
        return reply.to_bytes(self.encoding)

    def notice(self, reply: Reply) -> bytes:
        """A reply that answers no command: 421 on idle timeout or shutdown. Closes the conversation."""
        if reply.code != 421:
            raise StateError("only 421 may be sent unprompted")
        if self.phase is Phase.CLOSED:
            raise StateError("the conversation is closed")
        self.phase = Phase.CLOSED
        return reply.to_bytes(self.encoding)


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply and the command it answers (``None`` for the greeting or a spontaneous 421)."""

    command: Command | None
    reply: Reply


class ClientConversation:
    def __init__(self, max_reply: int = DEFAULT_MAX_REPLY, encoding: str = ENCODING) -> None:
        self.reader = ReplyReader(max_reply, encoding)
        self.encoding = encoding
        self.greeted = False
        self._awaiting: deque[Command] = deque()
        self.malformed: list[MalformedReply] = []

    @property
    def awaiting(self) -> tuple[Command, ...]:
        return tuple(self._awaiting)

    def sent(self, command: Command) -> None:
        """Record a command as sent (the analyzer's way in; :meth:`send` also formats it)."""
        self._awaiting.append(command)

    def send(self, command: Command) -> bytes:
        data = format_command(command.verb, command.arg, self.encoding)
        self.sent(command)
        return data

    def receive_data(self, data: bytes) -> list[Answer | MalformedReply]:
        out: list[Answer | MalformedReply] = []
        for event in self.reader.feed(data):
            if isinstance(event, MalformedReply):
                self.malformed.append(event)
                out.append(event)
            else:
                out.append(self.pair(event))
        return out

    def pair(self, reply: Reply) -> Answer:
        """Pair a parsed reply with the command it answers."""
        if not self.greeted:
            # 120 ("ready in nnn minutes") is a greeting too, even when a command was sent before it arrived.
            if reply.code in _GREETING_CODES or not self._awaiting:
                self.greeted = reply.code != 120
                return Answer(None, reply)
            self.greeted = True  # a capture that starts mid-session: no greeting seen
        if not self._awaiting:
            return Answer(None, reply)
        command = self._awaiting[0]
        if (
            reply.code in _STATUS_CODES
            and command.verb in TRANSFER_COMMANDS
            and len(self._awaiting) > 1
            and self._awaiting[1].verb == "STAT"
        ):
            # STAT during a transfer (RFC 959 §4.1.3) is answered before the transfer's own final reply.
            stat = self._awaiting[1]
            del self._awaiting[1]
            return Answer(stat, reply)
        if reply.is_final:
            self._awaiting.popleft()
        return Answer(command, reply)


def bad_line_text(event: BadLine | LineTooLong) -> str:
    """The text of the 500 reply for a line that is not a command."""
    if isinstance(event, BadLine):
        return f"Syntax error: {event.reason}."
    return f"Command line too long (limit {event.limit} bytes)."
