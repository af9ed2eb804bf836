"""The client's options: one typed, validated object, shared by the library, the CLI and the doctor."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from ftpkit.protocol.hostport import DataMode
from ftpkit.protocol.portrange import PortRangeError, parse_port_range

ClientTLSMode = Literal["off", "explicit", "optional", "implicit"]
"""off: plain FTP; explicit: AUTH TLS, required; optional: AUTH TLS, in clear if the server refuses it; implicit:
TLS from the first byte (ftps://)."""
CLIENT_TLS_MODES: tuple[str, ...] = get_args(ClientTLSMode)

Transcript = Callable[[str, str], None]
"""Called with (direction, text): ``-->`` a command sent, ``<--`` a reply line, ``===`` a data connection event,
``!!!`` a notice (a substituted address, a fallback). Passwords are masked before this sees them."""


def _no_transcript(direction: str, text: str) -> None:
    pass


@dataclass(frozen=True)
class ClientOptions:
    passive: bool = True
    epsv: bool = True  # passive: try EPSV before PASV
    eprt: bool = True  # active: try EPRT before PORT
    active_address: str | None = None  # announce this address in PORT/EPRT (behind NAT with a port forward)
    active_ports: tuple[int, int] | None = None
    fallback: bool = False  # retry a transfer once in the other mode when its data connection fails
    trust_pasv_address: bool = False
    timeout: float = 30.0  # connect, reply and data-idle timeout
    retries: int = 0
    encoding: str = "utf-8"
    ascii: bool = False
    tls: ClientTLSMode = "off"
    verify: bool = True  # check the server's certificate against the system store (or ca_file)
    ca_file: str | None = None
    clear_data: bool = False  # PROT C instead of PROT P
    ccc: bool = False  # back to a clear control connection after login (for NAT helpers)
    transcript: Transcript = field(default=_no_transcript, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"encoding: {self.encoding!r} is not a known encoding (e.g. utf-8, shift_jis, cp932, "
                             "euc-jp)") from None
        if self.timeout <= 0:
            raise ValueError(f"timeout: {self.timeout!r} must be more than 0 seconds")
        if self.retries < 0:
            raise ValueError(f"retries: {self.retries!r} must be 0 or more")
        if self.tls not in CLIENT_TLS_MODES:
            raise ValueError(f"tls: {self.tls!r} is not one of {', '.join(CLIENT_TLS_MODES)}")
        if self.active_ports is not None:
            try:
                object.__setattr__(self, "active_ports", parse_port_range(self.active_ports))
            except PortRangeError as exc:
                raise ValueError(f"active_ports: {exc}") from None

    @property
    def mode(self) -> DataMode:
        return "passive" if self.passive else "active"
