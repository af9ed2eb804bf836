"""What the analyzer reports as the capture goes on: the same facts for a file and for a live capture.

- :class:`SessionStarted`: a control connection was seen (by its port), or confirmed as FTP by its first command.
- :class:`ConnectionDecided`: a data connection's fate is known: ``established`` (SYN-ACK, or bytes), ``refused``
  (RST from the side that should accept) or ``syn-unanswered`` (no answer when the transfer's reply came, when the
  session ended, or ``Options.syn_timeout`` seconds after the SYN); also a control connection whose SYN is
  unanswered that long. A ``syn-unanswered`` fate may still turn into another one when a late answer comes.
- :class:`SessionEnded`: the control connection closed (FIN both ways), was reset, went quiet for too long, or the
  capture ended while it was open; its findings are final.
- :class:`NatPaired`: two sessions are the same one seen on both sides of a NAT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ftpkit.capture.model import DataConn, Fate, NatPair, Session, Transfer

EndReason = Literal["closed", "reset", "idle", "capture-end"]
DecidedBy = Literal["answer", "reply", "timeout", "session-end"]


@dataclass(frozen=True, slots=True)
class SessionStarted:
    ts: float
    session: Session


@dataclass(frozen=True, slots=True)
class ConnectionDecided:
    ts: float
    session: Session
    transfer: Transfer | None  # None: the control connection itself
    conn: DataConn  # the counters when it was decided
    fate: Fate
    by: DecidedBy  # what decided it: the peer's answer, the transfer's reply, the time-out, the session's end


@dataclass(frozen=True, slots=True)
class SessionEnded:
    ts: float
    session: Session
    reason: EndReason


@dataclass(frozen=True, slots=True)
class NatPaired:
    ts: float
    pair: NatPair


Event = SessionStarted | ConnectionDecided | SessionEnded | NatPaired
