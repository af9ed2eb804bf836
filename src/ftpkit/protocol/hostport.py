"""Host-port codecs: the address and port a side announces for the data connection.

- active:  ``PORT h1,h2,h3,h4,p1,p2`` (RFC 959) and ``EPRT |1|addr|port|`` / ``EPRT |2|addr|port|``
  (RFC 2428)
- passive: ``227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`` and
  ``229 Entering Extended Passive Mode (|||port|)``

In the six-number form the port is ``p1*256 + p2``; :func:`explain_port` shows that computation the way
engineers write it down (``195*256+80 = 50000``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from ftpkit.protocol.errors import HostPortError

DataMode = Literal["active", "passive"]
"""Who opens the data connection: the server (active: PORT, EPRT) or the client (passive: PASV, EPSV)."""
DataMethod = Literal["PORT", "EPRT", "PASV", "EPSV"]
"""The command that announced the data connection."""

_NUM = r"\s*([0-9]{1,3})\s*"  # ASCII digits only: \d would also take Arabic-Indic and other Unicode digits
# Digit boundaries: a search in "(1000,0,0,1,4,1)" must not find "000,0,0,1,4,1", nor "...,4,100" in
# "...,4,1000": both are errors, not addresses.
_SIX = re.compile(r"(?<![0-9])" + ",".join([_NUM] * 6) + r"(?![0-9])")


@dataclass(frozen=True, slots=True)
class HostPort:
    """An address and a port as announced on the control connection."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise HostPortError(f"port {self.port} is outside 0-65535")

    @property
    def p1(self) -> int:
        return self.port >> 8

    @property
    def p2(self) -> int:
        return self.port & 0xFF

    @property
    def family(self) -> int:
        """1 for IPv4, 2 for IPv6 (the EPRT protocol numbers)."""
        return 2 if ":" in self.host else 1

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == 2 else f"{self.host}:{self.port}"


@functools.lru_cache(maxsize=4096)  # a few calls per session on the same peer's address: parsed once
def plain_ip(address: str) -> str:
    """``::ffff:127.0.0.1`` -> ``127.0.0.1``; other addresses normalised (a zone index is dropped)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def classify_announced(announced: str, control_peer: str) -> str:
    """How a passive announcement's address relates to the control connection's peer.

    ``same``; or why it differs: ``unspecified`` (0.0.0.0), ``loopback`` (while the control peer is not),
    ``link-local``, ``private`` (RFC 1918 and the like, while the control peer is elsewhere), or ``other-host`` (a
    different address that could be reached, e.g. another loopback address when the control peer is one).
    """
    try:
        ip = ipaddress.ip_address(plain_ip(announced))
        peer = ipaddress.ip_address(plain_ip(control_peer))
    except ValueError:
        return "other-host"
    if ip == peer:
        return "same"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback and not peer.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private and not peer.is_private:
        return "private"
    return "other-host"


def explain_port(port: int) -> str:
    """``50000`` -> ``195*256+80 = 50000``."""
    return f"{port >> 8}*256+{port & 0xFF} = {port}"


@functools.lru_cache(maxsize=1024)  # the server's own announced address, over and over
def _ipv4(host: str) -> str:
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        raise HostPortError(f"{host!r} is not an IPv4 address") from None


@functools.lru_cache(maxsize=1024)
def _ipv6(host: str) -> str:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise HostPortError(f"{host!r} is not an IPv6 address") from None


def _from_six(numbers: tuple[str, ...]) -> HostPort:
    values = [int(n) for n in numbers]
    for value in values:
        if value > 255:
            raise HostPortError(f"{value} is not a byte (0-255)")
    host = ".".join(str(v) for v in values[:4])
    return HostPort(host, values[4] * 256 + values[5])


def _six(hp: HostPort) -> str:
    host = _ipv4(hp.host)
    return ",".join([*host.split("."), str(hp.p1), str(hp.p2)])


# --- PORT --------------------------------------------------------------------------------------------------

def parse_port(arg: str) -> HostPort:
    """Parse a PORT argument ``h1,h2,h3,h4,p1,p2``."""
    match = _SIX.fullmatch(arg)
    if not match:
        raise HostPortError(f"PORT argument {arg[:60]!r} is not six numbers h1,h2,h3,h4,p1,p2")
    return _from_six(match.groups())


def format_port(hp: HostPort) -> str:
    """The PORT argument for an IPv4 address and a port."""
    return _six(hp)


# --- 227 ---------------------------------------------------------------------------------------------------

def parse_pasv(text: str) -> HostPort:
    """Parse the text of a 227 reply, with or without parentheses (as Wireshark and curl do)."""
    match = _SIX.search(text)
    if not match:
        raise HostPortError(f"227 reply {text[:80]!r} carries no h1,h2,h3,h4,p1,p2")
    return _from_six(match.groups())


def format_pasv(hp: HostPort) -> str:
    """The text of a 227 reply; always with parentheses, which old conntrack helpers require."""
    return f"Entering Passive Mode ({_six(hp)})."


# --- EPRT --------------------------------------------------------------------------------------------------

def _split_delimited(text: str, fields: int, what: str) -> list[str]:
    text = text.strip()
    if len(text) < fields + 1:
        raise HostPortError(f"{what} {text[:60]!r} is too short")
    delim = text[0]
    if not 33 <= ord(delim) <= 126:
        raise HostPortError(f"{what} delimiter {delim!r} is not a printable ASCII character")
    parts = text.split(delim)
    if len(parts) != fields + 2 or parts[0] or parts[-1]:
        raise HostPortError(f"{what} {text[:60]!r} is not of the form {delim}f{delim}...{delim}")
    return parts[1:-1]


def _port_number(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise HostPortError(f"{what} port {text[:20]!r} is not a number")
    port = int(text)
    if port > 65535:
        raise HostPortError(f"{what} port {port} is outside 0-65535")
    return port


def parse_eprt(arg: str) -> HostPort:
    """Parse an EPRT argument ``|1|132.235.1.2|6275|`` or ``|2|::1|5282|`` (any delimiter, RFC 2428)."""
    proto, host, port = _split_delimited(arg, 3, "EPRT argument")
    if proto == "1":
        host = _ipv4(host)
    elif proto == "2":
        host = _ipv6(host)
    else:
        raise HostPortError(f"EPRT network protocol {proto[:10]!r} is not 1 (IPv4) or 2 (IPv6)")
    return HostPort(host, _port_number(port, "EPRT"))


def format_eprt(hp: HostPort) -> str:
    host = _ipv6(hp.host) if hp.family == 2 else _ipv4(hp.host)
    return f"|{hp.family}|{host}|{hp.port}|"


# --- 229 ---------------------------------------------------------------------------------------------------

_EPSV = re.compile(r"\((.)\1\1([^()]*?)\1\)")


def parse_epsv(text: str) -> int:
    """Parse the text of a 229 reply, ``Entering Extended Passive Mode (|||6446|)``: the port."""
    match = _EPSV.search(text)
    if not match:
        raise HostPortError(f"229 reply {text[:80]!r} carries no (|||port|)")
    return _port_number(match.group(2), "229")


def format_epsv(port: int) -> str:
    _port_number(str(port), "229")
    return f"Entering Extended Passive Mode (|||{port}|)"


def parse_epsv_arg(arg: str | None) -> int | str | None:
    """The argument of EPSV: ``None`` (any), ``1``/``2`` (a network protocol) or ``"ALL"``."""
    if arg is None or not arg.strip():
        return None
    arg = arg.strip()
    if arg.upper() == "ALL":
        return "ALL"
    if arg in ("1", "2"):
        return int(arg)
    raise HostPortError(f"EPSV argument {arg[:20]!r} is not 1, 2 or ALL")
