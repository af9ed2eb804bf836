"""Hand-built captures for the analyzer tests and the benchmark: packets with struct, pcap and pcapng writers.

Nothing here parses: it only writes the bytes tcpdump or Wireshark would write, so the tests can put exactly the
segments they want (out of order, retransmitted, split, cut short) into a file of any link type.
"""

from __future__ import annotations

import gzip
import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Link types (https://www.tcpdump.org/linktypes.html)
NULL, ETHERNET, RAW, LOOP, LINUX_SLL, LINUX_SLL2 = 0, 1, 101, 108, 113, 276

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_segment(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
                window: int = 65535) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, window, 0,
                       0) + payload


def ip_packet(src: str, dst: str, payload: bytes, proto: int = 6, ident: int = 0) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64, proto, 0,
                             s.packed, d.packed)
        header = header[:10] + struct.pack("!H", _sum16(header)) + header[12:]
        return header + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, 64, s.packed, d.packed) + payload


def link_frame(linktype: int, ip: bytes) -> bytes:
    """Wrap an IP packet in the link-layer header of ``linktype``."""
    v6 = ip[0] >> 4 == 6
    ethertype = 0x86DD if v6 else 0x0800
    if linktype == ETHERNET:
        return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + struct.pack("!H", ethertype) + ip
    if linktype == RAW:
        return ip
    if linktype == NULL:  # host byte order as written by the capturing machine (little-endian here); AF_INET6 = 10
        return struct.pack("<I", 10 if v6 else 2) + ip
    if linktype == LOOP:  # network byte order; BSD's AF_INET6 = 24
        return struct.pack("!I", 24 if v6 else 2) + ip
    if linktype == LINUX_SLL:  # packet type, ARPHRD, address length, address (8), protocol
        return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, ethertype) + ip
    if linktype == LINUX_SLL2:  # protocol, reserved, ifindex, ARPHRD, packet type, address length, address (8)
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, 772, 0, 6, b"\0" * 8) + ip
    raise ValueError(f"unsupported link type {linktype}")


@dataclass
class Frame:
    ts: float
    data: bytes
    iface: int = 0


# --- writers ---------------------------------------------------------------------------------------------------


def pcap_header(linktype: int, nano: bool = False, snaplen: int = 262144) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(frame: Frame, nano: bool = False) -> bytes:
    sec = int(frame.ts)
    frac = round((frame.ts - sec) * (1e9 if nano else 1e6))
    return struct.pack("<IIII", sec, frac, len(frame.data), len(frame.data)) + frame.data


def write_pcap(path: Path, linktype: int, frames: Iterable[Frame], nano: bool = False, compress: bool = False) -> Path:
    data = pcap_header(linktype, nano) + b"".join(pcap_record(f, nano) for f in frames)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def pcapng_bytes(linktypes: list[int], frames: Iterable[Frame], names: list[str] | None = None) -> bytes:
    """A section with one interface per link type; frames name their interface by index."""
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for i, linktype in enumerate(linktypes):
        name = (names[i] if names else f"if{i}").encode()
        options = struct.pack("<HH", 2, len(name)) + name + b"\0" * (-len(name) % 4)
        options += struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HH", 0, 0)  # if_tsresol = 10^-6, opt_endofopt
        out.append(_block(1, struct.pack("<HHI", linktype, 0, 262144) + options))
    for frame in frames:
        ticks = round(frame.ts * 1e6)
        body = struct.pack("<IIIII", frame.iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame.data), len(frame.data))
        out.append(_block(6, body + frame.data))
    return b"".join(out)


def write_pcapng(path: Path, linktypes: list[int], frames: Iterable[Frame], compress: bool = False) -> Path:
    data = pcapng_bytes(linktypes, frames)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --- TCP conversations -----------------------------------------------------------------------------------------


@dataclass
class Tcp:
    """One TCP connection between a client and a server; methods return IP packets with correct seq/ack numbers."""

    client: str
    cport: int
    server: str
    sport: int
    cseq: int = 1000
    sseq: int = 5000
    ident: int = field(default=1, repr=False)

    def _ip(self, from_client: bool, flags: int, payload: bytes, seq: int | None = None) -> bytes:
        self.ident += 1
        if from_client:
            seq = self.cseq if seq is None else seq
            seg = tcp_segment(self.cport, self.sport, seq, self.sseq, flags, payload)
            return ip_packet(self.client, self.server, seg, ident=self.ident)
        seq = self.sseq if seq is None else seq
        seg = tcp_segment(self.sport, self.cport, seq, self.cseq, flags, payload)
        return ip_packet(self.server, self.client, seg, ident=self.ident)

    def syn(self) -> bytes:
        """The client's SYN (again and again for a retransmission)."""
        return ip_packet(self.client, self.server, tcp_segment(self.cport, self.sport, self.cseq, 0, SYN),
                         ident=self.ident)

    def handshake(self) -> list[bytes]:
        out = [self.syn()]
        self.cseq += 1
        out.append(self._ip(False, SYN | ACK, b""))
        self.sseq += 1
        out.append(self._ip(True, ACK, b""))
        return out

    def rst_to_syn(self) -> bytes:
        seg = tcp_segment(self.sport, self.cport, 0, self.cseq + 1, RST | ACK)
        return ip_packet(self.server, self.client, seg)

    def client_sends(self, payload: bytes, flags: int = PSH | ACK) -> bytes:
        pkt = self._ip(True, flags, payload)
        self.cseq += len(payload)
        return pkt

    def server_sends(self, payload: bytes, flags: int = PSH | ACK) -> bytes:
        pkt = self._ip(False, flags, payload)
        self.sseq += len(payload)
        return pkt

    def ack_from_client(self) -> bytes:
        return self._ip(True, ACK, b"")

    def ack_from_server(self) -> bytes:
        return self._ip(False, ACK, b"")

    def close(self) -> list[bytes]:
        out = [self._ip(True, FIN | ACK, b"")]
        self.cseq += 1
        out.append(self._ip(False, FIN | ACK, b""))
        self.sseq += 1
        out.append(self._ip(True, ACK, b""))
        return out


class Timeline:
    """Frames with increasing timestamps: ``add(packet, ...)`` stamps each one ``step`` seconds after the last."""

    def __init__(self, start: float = 1_700_000_000.0, step: float = 0.001, linktype: int = ETHERNET,
                 iface: int = 0) -> None:
        self.ts = start
        self.step = step
        self.linktype = linktype
        self.iface = iface
        self.frames: list[Frame] = []

    def add(self, *packets: bytes, gap: float | None = None, iface: int | None = None,
            linktype: int | None = None) -> Timeline:
        for pkt in packets:
            self.ts += self.step if gap is None else gap
            frame = link_frame(self.linktype if linktype is None else linktype, pkt)
            self.frames.append(Frame(self.ts, frame, self.iface if iface is None else iface))
        return self

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)


def ftp_exchange(tl: Timeline, ctl: Tcp, command: bytes | None, reply: bytes | None, delay: float = 0.002) -> None:
    """A command (if any) and then its reply (if any), each with the peer's ACK."""
    if command is not None:
        tl.add(ctl.client_sends(command))
        tl.add(ctl.ack_from_server())
    if reply is not None:
        tl.add(ctl.server_sends(reply), gap=delay)
        tl.add(ctl.ack_from_client())


def data_transfer(tl: Timeline, data: Tcp, size: int, from_initiator: bool = False, chunk: int = 1448) -> None:
    """Handshake, ``size`` bytes one way in ``chunk``-byte segments, an ACK, close. ``data.client`` is the side
    that connects (the FTP server in active mode); ``from_initiator`` says that it is also the sender."""
    tl.add(*data.handshake())
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        payload = bytes(n)
        tl.add(data.client_sends(payload) if from_initiator else data.server_sends(payload))
        sent += n
    tl.add(data.ack_from_server() if from_initiator else data.ack_from_client())
    tl.add(*data.close())
