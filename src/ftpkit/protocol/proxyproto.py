"""The PROXY protocol (HAProxy's specification, versions 1 and 2): the header a load balancer sends first on a
connection it forwards, carrying the client's real address.

- v1, text: ``PROXY TCP4 198.51.100.7 203.0.113.10 51234 21\\r\\n`` (``TCP6`` with IPv6 addresses;
  ``PROXY UNKNOWN ...\\r\\n`` when the sender does not know them), 107 bytes at most.
- v2, binary: the 12-byte signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``, version and command (``PROXY``, or ``LOCAL``
  for the balancer's own connections such as health checks), address family and transport, a length, the
  addresses, then TLVs (type, length, value; ``PP2_TYPE_CRC32C`` is checked when present).

:func:`parse_proxy_header` works on the bytes received so far: a header, ``None`` while more bytes are needed, or
:class:`ProxyHeaderError` (one line saying what is wrong). A header without a client address (``LOCAL``,
``UNKNOWN``, an unspecified family) has ``source`` ``None``: the receiver uses the connection's own endpoints.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Literal

from ftpkit.protocol.errors import ProtocolError

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
PP2_TYPE_CRC32C = 0x03

Kind = Literal["v1", "v2", "none", "undecided"]
Command = Literal["PROXY", "LOCAL"]
Address = tuple[str, int]

_V2_FAMILIES = {0x0: "UNSPEC", 0x1: "INET", 0x2: "INET6", 0x3: "UNIX"}
_V2_TRANSPORTS = {0x0: "UNSPEC", 0x1: "STREAM", 0x2: "DGRAM"}
_V2_ADDRESS_SIZE = {"UNSPEC": 0, "INET": 12, "INET6": 36, "UNIX": 216}
_V2_PROTOCOLS = {("INET", "STREAM"): "TCP4", ("INET6", "STREAM"): "TCP6", ("INET", "DGRAM"): "UDP4",
                 ("INET6", "DGRAM"): "UDP6"}
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


class ProxyHeaderError(ProtocolError):
    """Bytes that are not a valid PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: Literal[1, 2]
    command: Command
    protocol: str  # v1: TCP4, TCP6, UNKNOWN; v2: TCP4, TCP6, UDP4, UDP6, UNIX_STREAM, UNIX_DGRAM, UNSPEC...
    source: Address | None  # the client; None: use the connection's own peer
    destination: Address | None  # the address the client connected to (the balancer's)
    tlvs: tuple[tuple[int, bytes], ...] = ()
    length: int = 0  # bytes the header took; what follows belongs to the forwarded connection

    @property
    def health_check(self) -> bool:
        """The balancer's own connection: v2 LOCAL (HAProxy's health checks with send-proxy-v2), v1 UNKNOWN. (HAProxy's
        v1 checks send TCP4 with its own addresses instead, like a client.)"""
        return self.command == "LOCAL" or self.protocol == "UNKNOWN"

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of this type, or ``None``."""
        return next((value for t, value in self.tlvs if t == kind), None)


def detect(data: bytes) -> Kind:
    """Which header ``data`` starts with: ``v1``/``v2`` once the whole signature is there, ``undecided`` while it
    could still become one (nothing yet, or a part of a signature), ``none`` when it cannot."""
    for signature, kind in ((V1_PREFIX, "v1"), (V2_SIGNATURE, "v2")):
        if data.startswith(signature):
            return kind  # type: ignore[return-value]
        if signature.startswith(data):
            return "undecided"
    return "none"


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; ``None`` while incomplete; :class:`ProxyHeaderError` when invalid."""
    kind = detect(data)
    if kind == "undecided":
        return None
    if kind == "none":
        raise ProxyHeaderError("not a PROXY protocol header (neither the v1 text nor the v2 signature)")
    return _parse_v1(data) if kind == "v1" else _parse_v2(data)


# --- v1 ----------------------------------------------------------------------------------------------------------
def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"v1 header without CRLF in its first {V1_MAX} bytes")
        return None
    if end == 0 or data[end - 1:end] != b"\r":
        raise ProxyHeaderError("v1 header line does not end with CRLF")
    line = data[:end - 1]
    if b"\r" in line:
        raise ProxyHeaderError("v1 header has a CR inside the line")
    words = line.split(b" ")
    protocol = words[1] if len(words) > 1 else b""
    if protocol == b"UNKNOWN":  # the rest of the line, whatever it is, is to be ignored
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, (), end + 1)
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"v1 protocol {protocol[:10]!r} is not TCP4, TCP6 or UNKNOWN")
    if len(words) != 6:
        raise ProxyHeaderError("v1 header is not PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT (single spaces)")
    version = 4 if protocol == b"TCP4" else 6
    source = (_v1_address(words[2], version, "source"), _v1_port(words[4], "source"))
    destination = (_v1_address(words[3], version, "destination"), _v1_port(words[5], "destination"))
    return ProxyHeader(1, "PROXY", protocol.decode(), source, destination, (), end + 1)


def _v1_address(word: bytes, version: int, which: str) -> str:
    try:
        text = word.decode("ascii")
        address = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"v1 {which} address {word[:45]!r} is not an IPv{version} address") from None
    if "%" in text:
        raise ProxyHeaderError(f"v1 {which} address {text!r} has a zone")
    return str(address)


def _v1_port(word: bytes, which: str) -> int:
    if not _PORT.fullmatch(word) or int(word) > 65535:
        raise ProxyHeaderError(f"v1 {which} port {word[:10]!r} is not a port 0-65535 (decimal, no leading zero)")
    return int(word)


def format_v1(source: Address | None, destination: Address | None = None) -> bytes:
    """A v1 header; ``source`` ``None``: ``PROXY UNKNOWN``."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    ip = ipaddress.ip_address(source[0])
    protocol = "TCP4" if ip.version == 4 else "TCP6"
    return f"PROXY {protocol} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode("ascii")


# --- v2 ----------------------------------------------------------------------------------------------------------
def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    version, command_bits = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"v2 header with version {version} (only 2 exists)")
    if command_bits not in (0, 1):
        raise ProxyHeaderError(f"v2 command {command_bits:#x} is neither LOCAL (0) nor PROXY (1)")
    family = _V2_FAMILIES.get(data[13] >> 4)
    transport = _V2_TRANSPORTS.get(data[13] & 0x0F)
    if family is None or transport is None:
        raise ProxyHeaderError(f"v2 address family/transport byte {data[13]:#04x} is not defined")
    (length,) = struct.unpack_from("!H", data, 14)
    total = V2_FIXED + length
    if len(data) < total:
        return None
    block = data[V2_FIXED:total]
    size = _V2_ADDRESS_SIZE[family]
    if command_bits == 0:  # LOCAL: "the receiver must ... discard the protocol block including the family"
        _check_local_crc(data[:total], block, size)
        return ProxyHeader(2, "LOCAL", "UNSPEC", None, None, (), total)
    if len(block) < size:
        raise ProxyHeaderError(f"v2 {family} header has {len(block)} bytes of addresses, needs {size}")
    source = destination = None
    if family == "INET":
        src4, dst4, sport, dport = struct.unpack_from("!4s4sHH", block)
        source = (str(ipaddress.IPv4Address(src4)), sport)
        destination = (str(ipaddress.IPv4Address(dst4)), dport)
    elif family == "INET6":
        src6, dst6, sport, dport = struct.unpack_from("!16s16sHH", block)
        source = (str(ipaddress.IPv6Address(src6)), sport)
        destination = (str(ipaddress.IPv6Address(dst6)), dport)
    tlvs = _parse_tlvs(block[size:])
    for kind, offset, value in tlvs:
        if kind == PP2_TYPE_CRC32C:
            _check_crc(data[:total], V2_FIXED + size + offset, value)
    protocol = _V2_PROTOCOLS.get((family, transport), "UNSPEC" if family == "UNSPEC" else f"{family}_{transport}")
    return ProxyHeader(2, "PROXY", protocol, source, destination, tuple((k, v) for k, _, v in tlvs), total)


def _parse_tlvs(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(type, offset of the value, value)`` of each TLV."""
    out = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyHeaderError(f"v2 TLV truncated: {len(data) - offset} byte(s) where a type and length start")
        kind, size = data[offset], struct.unpack_from("!H", data, offset + 1)[0]
        value = data[offset + 3:offset + 3 + size]
        if len(value) != size:
            raise ProxyHeaderError(f"v2 TLV {kind:#04x} claims {size} bytes, {len(value)} left")
        out.append((kind, offset + 3, value))
        offset += 3 + size
    return out


def _check_local_crc(header: bytes, block: bytes, size: int) -> None:
    """A LOCAL header's block is discarded, but a checksum in it is still checked (a PROXY header whose command bit
    flipped in transit must not pass for a health check)."""
    try:
        tlvs = _parse_tlvs(block[size:]) if len(block) >= size else []
    except ProxyHeaderError:
        return
    for kind, offset, value in tlvs:
        if kind == PP2_TYPE_CRC32C:
            _check_crc(header, V2_FIXED + size + offset, value)


def _check_crc(header: bytes, at: int, crc: bytes) -> None:
    """The checksum is over the whole header with the checksum's own 4 bytes zeroed."""
    if len(crc) != 4:
        raise ProxyHeaderError(f"v2 CRC32C TLV has {len(crc)} bytes, not 4")
    if crc32c(header[:at] + b"\0\0\0\0" + header[at + 4:]) != struct.unpack("!I", crc)[0]:
        raise ProxyHeaderError("v2 header fails its CRC32C check")


def format_v2(source: Address | None, destination: Address | None = None, command: Command = "PROXY",
              tlvs: tuple[tuple[int, bytes], ...] = (), crc: bool = False) -> bytes:
    """A v2 header for a TCP connection (``source`` ``None`` or ``command`` LOCAL: no addresses)."""
    if command == "LOCAL" or source is None or destination is None:
        fam, addresses = 0x00, b""
    else:
        ip = ipaddress.ip_address(source[0])
        dst = ipaddress.ip_address(destination[0])
        fam = 0x11 if ip.version == 4 else 0x21
        fmt = "!4s4sHH" if ip.version == 4 else "!16s16sHH"
        addresses = struct.pack(fmt, ip.packed, dst.packed, source[1], destination[1])
    body = addresses + b"".join(bytes([kind]) + struct.pack("!H", len(value)) + value for kind, value in tlvs)
    if crc:
        body += bytes([PP2_TYPE_CRC32C, 0, 4]) + b"\0\0\0\0"
    header = V2_SIGNATURE + bytes([0x20 | (0 if command == "LOCAL" else 1), fam]) + struct.pack("!H", len(body)) \
        + body
    if crc:
        header = header[:-4] + struct.pack("!I", crc32c(header))
    return header


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as the v2 ``PP2_TYPE_CRC32C`` TLV carries it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
