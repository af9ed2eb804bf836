"""Transfer records: one info log line per transfer and, optionally, a wu-ftpd/vsftpd ``xferlog`` file.

xferlog fields: current-time transfer-time remote-host file-size filename transfer-type special-action-flag
direction access-mode username service-name authentication-method authenticated-user-id completion-status.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ftpkit.protocol.hostport import DataMethod, DataMode

log = logging.getLogger("ftpkit.server")

Direction = Literal["o", "i"]
"""xferlog's direction: ``o`` outgoing (a download), ``i`` incoming (an upload)."""


@dataclass(frozen=True, slots=True)
class TransferRecord:
    session: str
    user: str
    anonymous: bool
    peer: str
    command: str
    path: str
    direction: Direction
    bytes: int
    seconds: float
    ascii: bool
    mode: DataMode
    method: DataMethod
    announced: str
    complete: bool
    error: str = ""


class TransferLog:
    """Writes xferlog lines from one thread of its own, in order, never on the event loop."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xferlog") if path else None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)

    def record(self, rec: TransferRecord) -> None:
        if log.isEnabledFor(logging.INFO):  # the line and its fields are built only when someone reads them
            rate = rec.bytes / rec.seconds / 1e6 if rec.seconds > 0 else 0.0
            status = "ok" if rec.complete else f"failed ({rec.error})"
            log.info(
                "[%s] transfer %s %s %s: %d bytes in %.3f s (%.1f MB/s), %s %s %s, %s",
                rec.session, rec.user, rec.command, rec.path, rec.bytes, rec.seconds, rate, rec.mode, rec.method,
                rec.announced, status,
                extra={"transfer": {
                    "user": rec.user, "command": rec.command, "path": rec.path, "bytes": rec.bytes,
                    "seconds": round(rec.seconds, 6), "mode": rec.mode, "method": rec.method,
                    "announced": rec.announced, "complete": rec.complete, "error": rec.error,
                }},
            )
        if self.path is None or rec.command not in ("RETR", "STOR", "STOU", "APPE"):
            return
        name = rec.path.replace(" ", "_")
        line = " ".join([
            time.strftime("%a %b %d %H:%M:%S %Y", time.localtime()),
            str(max(1, round(rec.seconds))), rec.peer, str(rec.bytes), name,
            "a" if rec.ascii else "b", "_", rec.direction, "a" if rec.anonymous else "r",
            rec.user, "ftp", "0", "*", "c" if rec.complete else "i",
        ])
        assert self._writer is not None
        self._writer.submit(self._append, line)

    def _append(self, line: str) -> None:
        assert self.path is not None
        try:
            with self.path.open("a", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            log.error("xferlog %s: %s", self.path, exc.strerror)
