"""The command table: verb -> handler, with each command's preconditions declared next to its name.

``grep '"RETR"' src/ftpkit/server/commands`` finds the RETR handler. The session checks the declared
preconditions (login, argument, write permission) before it calls a handler, so handlers hold only the
command's own logic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ftpkit.protocol.commands import Command
    from ftpkit.server.session import Session

Handler = Callable[["Session", "Command"], Awaitable[None]]
ArgRule = Literal["none", "optional", "required"]


@dataclass(frozen=True, slots=True)
class Spec:
    verb: str
    handler: Handler
    login: bool  # needs a logged-in user (530 otherwise)
    arg: ArgRule  # "required": 501 without one; "none": 501 with one
    write: bool  # needs write permission (550 otherwise)
    syntax: str  # for HELP VERB


COMMANDS: dict[str, Spec] = {}


def command(*verbs: str, login: bool = True, arg: ArgRule = "optional", write: bool = False,
            syntax: str = "") -> Callable[[Handler], Handler]:
    """Register a handler for one verb and its aliases (``@command("PWD", "XPWD")``)."""

    def register(handler: Handler) -> Handler:
        for verb in verbs:
            if verb in COMMANDS:
                raise RuntimeError(f"{verb} registered twice")
            COMMANDS[verb] = Spec(verb, handler, login, arg, write, syntax or verb)
        return handler

    return register
