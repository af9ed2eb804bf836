"""The first flight of a TLS client, read before OpenSSL sees it (sans-I/O, no ``ssl``).

Python's ``ssl`` cannot tell a client that offers no ALPN from one that offers only protocols the server does not
speak (OpenSSL then goes on without ALPN), and it cannot be asked to refuse the second with the
``no_application_protocol`` alert that RFC 7301 §3.2 prescribes, which is what defeats ALPACA-style cross-protocol
attacks (an HTTPS client redirected to an FTP server). So a server reads the ClientHello itself first:
:func:`read_client_hello` says whether the bytes so far are a ClientHello (and which ALPN protocols it offers), need
more bytes, or are not TLS at all (then the connection is dropped at once instead of at the handshake timeout).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

HANDSHAKE = 22  # TLS record content type
CLIENT_HELLO = 1  # handshake message type
SERVER_NAME_EXTENSION = 0  # RFC 6066 §3
HOST_NAME = 0  # the one NameType of server_name
ALPN_EXTENSION = 16  # RFC 7301
MAX_RECORD = 1 << 14  # TLSPlaintext.length limit (RFC 8446 §5.1)
MAX_HELLO = 1 << 16  # a ClientHello larger than this is not taken as one
NO_APPLICATION_PROTOCOL = 120  # alert description (RFC 7301)
UNRECOGNIZED_NAME = 112  # alert description (RFC 6066 §3)


class NotClientHello(ValueError):
    """Bytes that cannot be the start of a TLS ClientHello; the text says why."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    alpn: tuple[bytes, ...] | None  # the protocols offered, None without the ALPN extension
    server_name: str | None = None  # the host_name of the server_name extension (SNI), None without it


class _Cursor:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise NotClientHello(f"{self.what}: {field} runs past the end")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def number(self, n: int, field: str) -> int:
        return int.from_bytes(self.take(n, field), "big")

    def vector(self, length_bytes: int, field: str) -> bytes:
        return self.take(self.number(length_bytes, f"{field} length"), field)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _handshake_bytes(data: bytes) -> tuple[bytes, bool]:
    """The payloads of the leading handshake records, and whether a record of another type follows them."""
    out = bytearray()
    pos = 0
    while True:
        header = data[pos:pos + 5]
        if not header:
            return bytes(out), False
        if header[0] != HANDSHAKE:
            if pos:
                return bytes(out), True
            if header[0] & 0x80:
                raise NotClientHello("an SSL 2.0 ClientHello (not supported)")
            raise NotClientHello(f"the first byte is {header[0]:#04x}, not a TLS handshake record (0x16)")
        if len(header) >= 2 and header[1] != 3:
            raise NotClientHello(f"record version {header[1:3].hex()} is not TLS (03xx)")
        if len(header) < 5:
            return bytes(out), False
        length = int.from_bytes(header[3:5], "big")
        if length == 0 or length > MAX_RECORD:
            raise NotClientHello(f"a handshake record of {length} bytes (allowed: 1 to {MAX_RECORD})")
        payload = data[pos + 5:pos + 5 + length]
        out += payload
        if len(payload) < length:
            return bytes(out), False
        pos += 5 + length


def read_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of ``data``; ``None`` while more bytes are needed.

    Raises :class:`NotClientHello` as soon as the bytes cannot be one (garbage, HTTP, an FTP command, an oversized
    or malformed record)."""
    handshake, other_follows = _handshake_bytes(data)
    if handshake and handshake[0] != CLIENT_HELLO:
        raise NotClientHello(f"handshake message type {handshake[0]}, not a ClientHello (1)")
    if len(handshake) >= 4:
        length = int.from_bytes(handshake[1:4], "big")
        if length > MAX_HELLO:
            raise NotClientHello(f"a ClientHello of {length} bytes (at most {MAX_HELLO} are taken)")
        if len(handshake) >= 4 + length:
            return _parse_body(handshake[4:4 + length])
    if other_follows:
        raise NotClientHello("a record of another type before the ClientHello is complete")
    return None


def _parse_body(body: bytes) -> ClientHello:
    c = _Cursor(body, "ClientHello")
    c.take(2, "legacy_version")
    c.take(32, "random")
    session_id = c.vector(1, "legacy_session_id")
    if len(session_id) > 32:
        raise NotClientHello("ClientHello: legacy_session_id longer than 32 bytes")
    suites = c.vector(2, "cipher_suites")
    if not suites or len(suites) % 2:
        raise NotClientHello("ClientHello: cipher_suites is empty or of odd length")
    if not c.vector(1, "legacy_compression_methods"):
        raise NotClientHello("ClientHello: no compression method")
    if c.left == 0:
        return ClientHello(alpn=None)  # no extensions at all
    extensions = _Cursor(c.vector(2, "extensions"), "ClientHello extensions")
    if c.left:
        raise NotClientHello("ClientHello: bytes after the extensions")
    alpn: tuple[bytes, ...] | None = None
    server_name: str | None = None
    seen: set[int] = set()
    while extensions.left:
        kind = extensions.number(2, "extension type")
        data = extensions.vector(2, f"extension {kind}")
        if kind in seen:
            raise NotClientHello(f"ClientHello: extension {kind} appears twice")
        seen.add(kind)
        if kind == ALPN_EXTENSION:
            alpn = _parse_alpn(data)
        elif kind == SERVER_NAME_EXTENSION:
            server_name = _parse_server_name(data)
    return ClientHello(alpn=alpn, server_name=server_name)


def _parse_server_name(data: bytes) -> str | None:
    outer = _Cursor(data, "server_name extension")
    if not outer.left:
        return None  # the empty form a server sends back; taken as no name
    names = _Cursor(outer.vector(2, "server_name_list"), "server_name_list")
    if outer.left:
        raise NotClientHello("server_name extension: bytes after the name list")
    host: str | None = None
    while names.left:
        kind = names.number(1, "name_type")
        name = names.vector(2, "host_name")
        if kind == HOST_NAME and host is None:
            if not name or not name.isascii():
                raise NotClientHello("server_name extension: a host_name that is empty or not ASCII")
            host = name.decode("ascii")
    return host


def _parse_alpn(data: bytes) -> tuple[bytes, ...]:
    outer = _Cursor(data, "ALPN extension")
    names = _Cursor(outer.vector(2, "protocol_name_list"), "ALPN protocol_name_list")
    if outer.left:
        raise NotClientHello("ALPN extension: bytes after the protocol list")
    out: list[bytes] = []
    while names.left:
        name = names.vector(1, "protocol name")
        if not name:
            raise NotClientHello("ALPN extension: an empty protocol name")
        out.append(name)
    if not out:
        raise NotClientHello("ALPN extension: an empty protocol list")
    return tuple(out)


def alpn_refusal(hello: ClientHello, protocol: bytes) -> str | None:
    """Why a server that speaks only ``protocol`` must refuse this client (RFC 7301 §3.2), or ``None``: a client that
    offers protocols, none of them ``protocol``. A client without ALPN is accepted."""
    if hello.alpn is None or protocol in hello.alpn:
        return None
    offered = ", ".join(name.decode("ascii", "backslashreplace") for name in hello.alpn[:8])
    return f"the client offers the ALPN protocols {offered} but not {protocol.decode('ascii')}"


def name_matches(host: str, pattern: str) -> bool:
    """Whether a DNS name from a certificate (``pattern``) covers ``host`` (RFC 6125 §6.4): case-insensitive, a
    trailing dot ignored; a wildcard only as the whole left-most label of a name of three labels or more, standing
    for exactly one label (``*.example.com`` covers ``ftp.example.com``, not ``example.com`` nor ``a.b.example.com``);
    never for an A-label (``xn--``) nor partial wildcards (``f*.example.com``: not matched, as browsers do)."""
    host, pattern = host.rstrip(".").lower(), pattern.rstrip(".").lower()
    if not host or not pattern:
        return False
    if "*" not in pattern:
        return host == pattern
    first, _, rest = pattern.partition(".")
    if first != "*" or "*" in rest or rest.count(".") < 1:
        return False
    label, _, host_rest = host.partition(".")
    return bool(label) and not label.startswith("xn--") and host_rest == rest


def sni_refusal(hello: ClientHello, dns_names: tuple[str, ...], ip_names: tuple[str, ...] = ()) -> str | None:
    """Why a server with strict SNI refuses this client, or ``None``: its server_name matches none of the
    certificate's names. A client without SNI is accepted (one that connects to an IP address cannot send any: RFC
    6066 forbids IP literals in SNI). A client that sends an IP literal anyway is held to the IP addresses."""
    name = hello.server_name
    if name is None:
        return None
    try:
        literal = ipaddress.ip_address(name)
    except ValueError:
        if any(name_matches(name, pattern) for pattern in dns_names):
            return None
    else:
        if any(literal == ipaddress.ip_address(ip) for ip in ip_names):
            return None
    shown = name if len(name) <= 80 else name[:80] + "..."
    return f"the client asks for the server name {shown!r}, which the certificate does not name"


def fatal_alert(description: int) -> bytes:
    """A plaintext fatal alert record (sent before any key exchange, so it travels in clear, as OpenSSL's would)."""
    return bytes((21, 3, 3, 0, 2, 2, description))
