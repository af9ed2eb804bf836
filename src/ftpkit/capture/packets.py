"""Link layer, IP and TCP headers: from a captured frame to a TCP segment, or ``None`` for anything else.

Link types: Ethernet (with 802.1Q/802.1ad tags), Linux cooked SLL and SLL2 (``tcpdump -i any``), raw IP
(101, and the historical 12/14), IPv4/IPv6 (228/229), BSD loopback/NULL (0, 108). IPv6 extension headers are
skipped; IP fragments other than the first and non-TCP packets are not segments.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

ETHERNET, NULL, LOOP, RAW, RAW12, RAW14, LINUX_SLL, LINUX_SLL2, IPV4, IPV6 = 1, 0, 108, 101, 12, 14, 113, 276, 228, 229
SUPPORTED_LINKTYPES = frozenset({ETHERNET, NULL, LOOP, RAW, RAW12, RAW14, LINUX_SLL, LINUX_SLL2, IPV4, IPV6})

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_TCP = struct.Struct("!IIBB")
_U16 = struct.Struct("!H")
_PORTS = struct.Struct("!HH")
V4_TCP = struct.Struct("!BxHxxHxB2x12sIIBB")
"""An IPv4 header without options and the TCP header after it, in one go: version and length, total length,
fragment field, protocol, the flow key (addresses and ports: contiguous there), sequence and acknowledgement
numbers, data offset, flags."""
FAST = {ETHERNET: (12, b"\x08\x00", 14), LINUX_SLL: (14, b"\x08\x00", 16), LINUX_SLL2: (0, b"\x08\x00", 20)}
"""Link types whose IPv4 frames take the fast path: where the protocol field is, its IPv4 value, where IP starts."""
V6_TCP = struct.Struct("!BxxxHBx36sIIBB")
"""An IPv6 header without extension headers and the TCP header after it: version (and traffic class), payload
length, next header, the flow key (addresses and ports: contiguous there too), sequence and acknowledgement
numbers, data offset, flags."""
FAST_HEADERS = {
    linktype: (struct.Struct(f"!H{ip - at - 2}x{V4_TCP.format[1:]}").unpack_from,
               struct.Struct(f"!H{ip - at - 2}x{V6_TCP.format[1:]}").unpack_from, at, ip + 40, ip + 60)
    for linktype, (at, _, ip) in FAST.items()
}
"""Per link type of the fast path: the unpack of its IP protocol field with an IPv4 header and the TCP header after
it, the same with IPv6, where the protocol field lies, how long a frame must be for each."""
_IPV6_SKIP = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options


class Segment(NamedTuple):
    src: bytes  # 4 or 16 bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes  # as captured: shorter than ``size`` when the capture cut the packet (snaplen)
    size: int  # the TCP payload length the IP header declares


def ip_offset(linktype: int, frame: bytes) -> int:
    """Where the IP header starts in ``frame``, or -1 when the frame does not carry IP."""
    if linktype == ETHERNET:
        pos = 12
        ethertype = _U16.unpack_from(frame, pos)[0] if len(frame) >= 14 else 0
        while ethertype in (0x8100, 0x88A8) and len(frame) >= pos + 8:
            pos += 4
            ethertype = _U16.unpack_from(frame, pos)[0]
        return pos + 2 if ethertype in (0x0800, 0x86DD) else -1
    if linktype == LINUX_SLL:
        return 16 if len(frame) >= 16 and frame[14:16] in (b"\x08\x00", b"\x86\xdd") else -1
    if linktype == LINUX_SLL2:
        return 20 if len(frame) >= 20 and frame[0:2] in (b"\x08\x00", b"\x86\xdd") else -1
    if linktype in (RAW, RAW12, RAW14, IPV4, IPV6):
        return 0
    if linktype in (NULL, LOOP):  # 4-byte address family in either byte order: trust the IP version instead
        return 4
    return -1


Header = tuple[bytes, int, int, int, int, int]
"""(key, seq, ack, flags, payload start, payload end): no copy of the payload is made. ``key`` is the flow key
(see :func:`flow_key`)."""


def flow_key(src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """One direction of a TCP connection as one string: source and destination address, source and destination
    port (12 bytes for IPv4, 36 for IPv6). In an IPv4 header without options (or an IPv6 header without extension
    headers) followed by TCP these bytes are contiguous, so the fast path takes the key with the same unpack as the
    header fields."""
    return src + dst + _PORTS.pack(sport, dport)


def key_parts(key: bytes) -> tuple[bytes, int, bytes, int]:
    """(src, sport, dst, dport) of a flow key."""
    n = (len(key) - 4) >> 1
    sport, dport = _PORTS.unpack_from(key, 2 * n)
    return key[:n], sport, key[n:2 * n], dport


def reverse_key(key: bytes) -> bytes:
    """The key of the other direction."""
    n = (len(key) - 4) >> 1
    return key[n:2 * n] + key[:n] + key[2 * n + 2:] + key[2 * n:2 * n + 2]


def tcp_header(linktype: int, frame: bytes) -> Header | None:
    """The TCP header fields of a frame and where its payload lies, or ``None``. ``end`` is where the IP header
    says the payload ends; it lies beyond the frame when the capture cut the packet short (snaplen)."""
    fast = FAST.get(linktype)
    if fast is not None and len(frame) >= fast[2] + 40:  # IPv4 without options: one unpack (the common case)
        at, ipv4, o = fast
        if frame[at:at + 2] == ipv4:
            vi, total, frag, proto, key, seq, ack, off, flags = V4_TCP.unpack_from(frame, o)
            if vi == 0x45 and proto == 6 and not frag & 0x1FFF:
                start = o + 20 + (off >> 4) * 4
                end = o + total if total else len(frame)
                return key, seq, ack, flags, start, end if end > start else start
    if linktype == ETHERNET and frame[12:14] == b"\x08\x00":
        o = 14
    else:
        o = ip_offset(linktype, frame)
        if o < 0:
            return None
    if len(frame) < o + 20:
        return None
    version = frame[o] >> 4
    if version == 4:
        ihl = (frame[o] & 0x0F) * 4
        if frame[o + 9] != 6 or ihl < 20:
            return None
        if _U16.unpack_from(frame, o + 6)[0] & 0x1FFF:  # a later fragment: no TCP header in it
            return None
        total = _U16.unpack_from(frame, o + 2)[0]
        end = o + total if total else len(frame)  # 0: a TSO super-packet as captured on the sending host
        src, dst, t = frame[o + 12:o + 16], frame[o + 16:o + 20], o + ihl
    elif version == 6:
        if len(frame) < o + 40:
            return None
        nxt, plen = frame[o + 6], _U16.unpack_from(frame, o + 4)[0]
        end = o + 40 + plen if plen else len(frame)  # 0: a jumbogram
        src, dst, t = frame[o + 8:o + 24], frame[o + 24:o + 40], o + 40
        while nxt != 6:
            if nxt in _IPV6_SKIP and len(frame) >= t + 8:
                nxt, t = frame[t], t + (frame[t + 1] + 1) * 8
            elif nxt == 44 and len(frame) >= t + 8:  # fragment header: only the first fragment has the TCP header
                if _U16.unpack_from(frame, t + 2)[0] & 0xFFF8:
                    return None
                nxt, t = frame[t], t + 8
            else:
                return None
    else:
        return None
    if len(frame) < t + 20:
        return None
    seq, ack, off, flags = _TCP.unpack_from(frame, t + 4)
    start = t + (off >> 4) * 4
    return src + dst + frame[t:t + 4], seq, ack, flags, start, max(start, end)


def segment(frame: bytes, h: Header) -> Segment:
    """The full segment, payload included (only control connections need it)."""
    key, seq, ack, flags, start, end = h
    src, sport, dst, dport = key_parts(key)
    return Segment(src, dst, sport, dport, seq, ack, flags, frame[start:end], end - start)


def tcp_segment(linktype: int, frame: bytes) -> Segment | None:
    h = tcp_header(linktype, frame)
    return None if h is None else segment(frame, h)


def address(raw: bytes) -> str:
    """``b'\\x7f\\0\\0\\1'`` -> ``'127.0.0.1'``; 16 bytes -> the compressed IPv6 form."""
    if len(raw) == 4:
        return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"
    return str(ipaddress.IPv6Address(raw))


def endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
