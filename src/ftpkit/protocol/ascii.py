"""TYPE A line-ending conversion, incremental over chunks of any size (no per-byte Python loop).

Downloads: a LF not already preceded by CR becomes CRLF (a file that already has CRLF is not doubled, as in
vsftpd). Uploads: CRLF becomes LF; a CR at the end of a chunk is held until the next chunk shows what follows
it.
"""

from __future__ import annotations


class ToNetwork:
    """Local text (LF) to the network form (CRLF)."""

    def __init__(self) -> None:
        self._last_cr = False

    def convert(self, data: bytes) -> bytes:
        if not data:
            return b""
        head = b""
        if self._last_cr and data[:1] == b"\n":
            head, data = b"\n", data[1:]
        # After a consumed leading LF the last byte seen is that LF, so an empty rest means no CR is held.
        self._last_cr = data[-1:] == b"\r"
        return head + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class FromNetwork:
    """The network form (CRLF) to local text (LF)."""

    def __init__(self) -> None:
        self._held_cr = False

    def convert(self, data: bytes) -> bytes:
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data[-1:] == b"\r":
            self._held_cr = True
            data = data[:-1]
        return data.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        """What is still held at the end of the transfer (a final lone CR)."""
        held, self._held_cr = self._held_cr, False
        return b"\r" if held else b""
