"""Client errors. Every failure says which connection failed (control or data), in which mode, with the server's
reply, and what to try: ``str(error)`` is the one line the CLI prints."""

from __future__ import annotations

from ftpkit.protocol.hostport import DataMethod, DataMode
from ftpkit.protocol.replies import Reply


class FTPError(Exception):
    """Base class. ``transient`` failures (4xx replies, resets, timeouts) may be retried; others may not."""

    transient = False
    hint = ""

    def __str__(self) -> str:
        text = self.summary()
        if not self.hint:
            return text
        return f"{text}{'' if text.endswith(('.', '!', '?')) else '.'} {self.hint}"

    def summary(self) -> str:
        """The message without the advice."""
        return super().__str__()


class ControlConnectionError(FTPError):
    """The control connection could not be opened or broke."""

    transient = True


class ReplyError(FTPError):
    """The server answered a command with an error reply."""

    def __init__(self, command: str, reply: Reply, hint: str = "") -> None:
        super().__init__(f"{command} failed: {reply.code} {reply.text.splitlines()[-1] if reply.lines else ''}")
        self.command = command
        self.reply = reply
        self.transient = reply.kind == 4
        self.hint = hint


class DataConnectionError(FTPError):
    """The data connection could not be opened, or broke, in a given mode. ``opened`` when it was open (it broke
    afterwards, or TLS on it failed): retrying in the other mode (--fallback) would not help then."""

    transient = True

    def __init__(self, mode: DataMode, method: DataMethod, detail: str, reply: Reply | None = None, hint: str = "",
                 opened: bool = False) -> None:
        where = f"data connection ({mode} mode, {method})"
        text = f"{where}: {detail}"
        if reply is not None:
            text += f"; server replied {reply.code} {reply.text.splitlines()[-1] if reply.lines else ''}"
        super().__init__(text)
        self.mode = mode
        self.method = method
        self.detail = detail
        self.reply = reply
        self.opened = opened
        other = "--active" if mode == "passive" else "--passive"
        self.hint = hint or f"Try {other}, or --fallback to retry in the other mode."


class LocalError(FTPError):
    """A problem on this machine (a local file that cannot be read or written)."""


class NotOfferedError(FTPError):
    """The server does not offer a command this needs (no HASH or X digest command, no MFMT, no AVBL)."""


class VerifyError(FTPError):
    """A transferred file differs from its original (``--verify``): the message names both digests, or both sizes.
    Transient: a transfer again may well succeed (``--retries``; ``mirror`` retries the file once)."""

    transient = True
