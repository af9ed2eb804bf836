"""One direction of an encrypted control connection, followed record by record: where TLS ends and clear text
begins again (after CCC, RFC 4217 §6: both sides send close_notify and carry on in clear).

Nothing is decrypted. A TLS record is a 5-byte header (content type 20-24, version 3.x, length) and that many
bytes; the walk skips from header to header. At a record boundary, bytes that are no record header but the start
of an FTP line (a command for the client, a reply for the server) are the clear text after CCC. Once the walk is
lost (bytes missing from the capture, or something that is neither), the direction stays encrypted.
"""

from __future__ import annotations

import re

TLS_TYPES = frozenset({20, 21, 22, 23, 24})  # change_cipher_spec, alert, handshake, application_data, heartbeat
MAX_TLS_RECORD = (1 << 14) + 2048
COMMAND_START = re.compile(rb"[A-Za-z]{3,4}(?: |\r|\n)")
REPLY_START = re.compile(rb"[1-5][0-9][0-9][ -]")
LOOKAHEAD = 5  # bytes that tell a command or reply from the rest


class TLSRecords:
    def __init__(self, client: bool) -> None:
        self.line_start = COMMAND_START if client else REPLY_START
        self.left = 0  # bytes of the current record not seen yet
        self.head = b""  # a record header (or clear text) cut by the end of a segment
        self.lost = False
        self.records = 0

    def feed(self, data: bytes) -> bytes | None:
        """Walk ``data``: the clear text from where it starts (bytes held back from the segment before included),
        or ``None`` while everything is TLS (or the walk is lost)."""
        if self.lost:
            return None
        if self.head:
            data, self.head = self.head + data, b""
        pos, end = 0, len(data)
        while pos < end:
            if self.left:
                step = min(self.left, end - pos)
                self.left -= step
                pos += step
                continue
            if data[pos] not in TLS_TYPES:
                if end - pos < LOOKAHEAD:
                    self.head = data[pos:]  # too little to tell yet
                    return None
                if self.line_start.match(data, pos):
                    return data[pos:]
                self.lost = True
                return None
            if end - pos < 5:
                self.head = data[pos:]
                return None
            length = int.from_bytes(data[pos + 3:pos + 5], "big")
            if data[pos + 1] != 3 or length > MAX_TLS_RECORD:
                self.lost = True
                return None
            pos += 5
            self.left = length
            self.records += 1
        return None
