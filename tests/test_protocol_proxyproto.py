"""PROXY protocol v1 and v2 headers (protocol core), tested on bytes."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpkit.protocol.proxyproto import (
    PP2_TYPE_CRC32C,
    V1_MAX,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    crc32c,
    detect,
    format_v1,
    format_v2,
    parse_proxy_header,
)

# --- v1 ----------------------------------------------------------------------------------------------------------


def test_v1_tcp4_and_what_follows_it():
    data = b"PROXY TCP4 198.51.100.7 203.0.113.10 51234 21\r\nUSER x\r\n"
    header = parse_proxy_header(data)
    assert header == ProxyHeader(1, "PROXY", "TCP4", ("198.51.100.7", 51234), ("203.0.113.10", 21), (), 47)
    assert data[header.length:] == b"USER x\r\n" and not header.health_check


def test_v1_tcp6_is_normalised():
    header = parse_proxy_header(b"PROXY TCP6 2001:DB8:0:0::1 ::ffff:192.0.2.1 65535 0\r\n")
    assert header is not None
    mapped = str(ipaddress.IPv6Address("::ffff:192.0.2.1"))  # Python 3.13 writes it so, older ones ::ffff:c000:201
    assert header.source == ("2001:db8::1", 65535) and header.destination == (mapped, 0)


def test_v1_unknown_is_a_health_check_without_addresses():
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 0 0 whatever\r\n"):
        header = parse_proxy_header(line)
        assert header is not None and header.source is None and header.health_check and header.length == len(line)


@pytest.mark.parametrize("line, reason", [
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "does not end with CRLF"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "is not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "single spaces"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "single spaces"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "source address b'::1' is not an IPv4 address"),
    (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "destination address b'5.6.7.8' is not an IPv6 address"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "source address 'fe80::1%eth0' has a zone"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "source port b'65536' is not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 021\r\n", "destination port b'021' is not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "is not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "CR inside the line"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 " + b"2" * 100 + b"\r\n", f"without CRLF in its first {V1_MAX} bytes"),
])
def test_v1_malformed(line, reason):
    with pytest.raises(ProxyHeaderError) as info:
        parse_proxy_header(line)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_v1_longest_line_is_accepted():
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    longest = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()  # the spec's worst case
    assert len(longest) == V1_MAX
    header = parse_proxy_header(longest + b"x")
    assert header is not None and header.length == V1_MAX


# --- v2 ----------------------------------------------------------------------------------------------------------


def test_v2_inet_with_tlvs():
    data = (V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 12 + 8)
            + bytes([192, 0, 2, 1, 203, 0, 113, 10]) + struct.pack("!HH", 40000, 21)
            + bytes([0x01, 0, 2]) + b"h2" + bytes([0x04, 0, 0]) + b"rest")
    header = parse_proxy_header(data)
    assert header == ProxyHeader(2, "PROXY", "TCP4", ("192.0.2.1", 40000), ("203.0.113.10", 21),
                                 ((0x01, b"h2"), (0x04, b"")), 16 + 20)
    assert data[header.length:] == b"rest" and header.tlv(0x01) == b"h2" and header.tlv(0x02) is None


def test_v2_inet6():
    header = parse_proxy_header(format_v2(("2001:db8::7", 1), ("2001:db8::1", 21)))
    assert header is not None and header.protocol == "TCP6" and header.source == ("2001:db8::7", 1)


def test_v2_local_ignores_the_address_block():
    # LOCAL: "the receiver must ... discard the protocol block including the family", whatever it holds
    data = V2_SIGNATURE + bytes([0x20, 0x11]) + struct.pack("!H", 3) + b"\xff\xff\xff"
    header = parse_proxy_header(data)
    assert header == ProxyHeader(2, "LOCAL", "UNSPEC", None, None, (), 19) and header.health_check


def test_v2_unspec_and_unix_use_the_real_endpoints():
    unspec = parse_proxy_header(V2_SIGNATURE + bytes([0x21, 0x00, 0, 0]))
    assert unspec is not None and unspec.source is None and unspec.protocol == "UNSPEC" and not unspec.health_check
    unix = parse_proxy_header(V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", 216) + b"\0" * 216)
    assert unix is not None and unix.source is None and unix.protocol == "UNIX_STREAM"
    udp = parse_proxy_header(V2_SIGNATURE + bytes([0x21, 0x12]) + struct.pack("!H", 12) + b"\1" * 12)
    assert udp is not None and udp.protocol == "UDP4"


@pytest.mark.parametrize("data, reason", [
    (V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + b"\0" * 12, "version 1 (only 2 exists)"),
    (V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + b"\0" * 12, "command 0x2 is neither LOCAL (0) nor PROXY (1)"),
    (V2_SIGNATURE + bytes([0x21, 0x41, 0, 12]) + b"\0" * 12, "family/transport byte 0x41 is not defined"),
    (V2_SIGNATURE + bytes([0x21, 0x13, 0, 12]) + b"\0" * 12, "family/transport byte 0x13 is not defined"),
    (V2_SIGNATURE + bytes([0x21, 0x11, 0, 8]) + b"\0" * 8, "INET header has 8 bytes of addresses, needs 12"),
    (V2_SIGNATURE + bytes([0x21, 0x21, 0, 12]) + b"\0" * 12, "INET6 header has 12 bytes of addresses, needs 36"),
    (V2_SIGNATURE + bytes([0x21, 0x11, 0, 14]) + b"\0" * 14, "TLV truncated: 2 byte(s)"),
    (V2_SIGNATURE + bytes([0x21, 0x11, 0, 17]) + b"\0" * 12 + bytes([1, 0, 9, 0, 0]), "claims 9 bytes, 2 left"),
])
def test_v2_malformed(data, reason):
    with pytest.raises(ProxyHeaderError) as info:
        parse_proxy_header(data)
    assert reason in str(info.value)


def test_crc32c_check_value_and_a_damaged_header():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, B.4)
    header = format_v2(("192.0.2.1", 40000), ("203.0.113.10", 21), crc=True)
    parsed = parse_proxy_header(header)
    assert parsed is not None and parsed.tlv(PP2_TYPE_CRC32C) == header[-4:]
    damaged = header[:20] + bytes([header[20] ^ 1]) + header[21:]  # one bit of the source address
    with pytest.raises(ProxyHeaderError, match="fails its CRC32C check"):
        parse_proxy_header(damaged)
    as_local = header[:12] + b"\x20" + header[13:]  # PROXY -> LOCAL: would pass for a health check
    with pytest.raises(ProxyHeaderError, match="fails its CRC32C check"):
        parse_proxy_header(as_local)


# --- what real HAProxy sends (tests/fuzz/corpus/proxy_header, recorded by scripts/record-proxy-seeds.py) ---------

RECORDED = Path(__file__).resolve().parent / "fuzz" / "corpus" / "proxy_header"


def test_headers_recorded_from_haproxy():
    def parsed(name: str) -> tuple[ProxyHeader, bytes]:
        data = (RECORDED / f"haproxy-{name}.bin").read_bytes()
        header = parse_proxy_header(data)
        assert header is not None, name
        return header, data[header.length:]

    header, rest = parsed("v2-client")
    assert (header.version, header.command, header.protocol, header.source[0]) == (2, "PROXY", "TCP4", "127.0.0.2")
    assert rest == b"USER anonymous\r\n"
    header, rest = parsed("v2-check")  # send-proxy-v2 health checks: LOCAL, no addresses
    assert header.command == "LOCAL" and header.health_check and rest == b"QUIT\r\n"
    header, rest = parsed("v2-crc32c-uniqueid-client")  # HAProxy's own CRC32C, checked
    assert header.tlv(PP2_TYPE_CRC32C) is not None and header.tlv(0x05).startswith(b"7F000002:")
    assert rest == b"USER anonymous\r\n"
    header, _ = parsed("v2-crc32c-uniqueid-check")  # a LOCAL header's CRC is checked too
    assert header.command == "LOCAL"
    data = (RECORDED / "haproxy-v2-crc32c-uniqueid-client.bin").read_bytes()
    with pytest.raises(ProxyHeaderError, match="fails its CRC32C check"):
        parse_proxy_header(data[:17] + bytes([data[17] ^ 0x40]) + data[18:])
    # send-proxy (v1) health checks carry the balancer's own addresses, not UNKNOWN: not told from a client
    header, rest = parsed("v1-check")
    assert header.protocol == "TCP4" and header.source[0] == "127.0.0.1" and not header.health_check
    assert rest == b"QUIT\r\n"


# --- detection and incomplete headers ------------------------------------------------------------------------


def test_detect():
    assert detect(b"") == "undecided" and detect(b"PROX") == "undecided" and detect(b"\r\n\r\n") == "undecided"
    assert detect(b"PROXY ") == "v1" and detect(V2_SIGNATURE) == "v2"
    assert detect(b"USER anonymous\r\n") == "none" and detect(b"\r\n\r\nX") == "none" and detect(b"PROXYX") == "none"
    with pytest.raises(ProxyHeaderError, match="not a PROXY protocol header"):
        parse_proxy_header(b"\x16\x03\x01")  # a TLS ClientHello


# --- properties ------------------------------------------------------------------------------------------------

ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(0, 65535)
pairs = st.one_of(
    st.tuples(st.tuples(ipv4, ports), st.tuples(ipv4, ports)),
    st.tuples(st.tuples(ipv6, ports), st.tuples(ipv6, ports)),
)
tlvs = st.lists(st.tuples(st.integers(0, 255).filter(lambda t: t != PP2_TYPE_CRC32C), st.binary(max_size=40)),
                max_size=4).map(tuple)


@given(pairs, st.binary(max_size=20))
def test_v1_round_trip(pair, rest):
    source, destination = pair
    data = format_v1(source, destination)
    header = parse_proxy_header(data + rest)
    assert header is not None and (header.source, header.destination) == (source, destination)
    assert header.length == len(data) <= V1_MAX


@given(pairs, tlvs, st.booleans(), st.binary(max_size=20))
def test_v2_round_trip(pair, extra, crc, rest):
    source, destination = pair
    data = format_v2(source, destination, tlvs=extra, crc=crc)
    header = parse_proxy_header(data + rest)
    assert header is not None and (header.source, header.destination) == (source, destination)
    assert header.length == len(data) and header.tlvs[:len(extra)] == extra


@given(pairs, st.booleans(), st.data())
def test_every_part_of_a_header_is_incomplete_not_an_error(pair, v2, data):
    header = format_v2(*pair, crc=True) if v2 else format_v1(*pair)
    cut = data.draw(st.integers(0, len(header) - 1))
    assert parse_proxy_header(header[:cut]) is None


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: V2_SIGNATURE + b),
                 st.binary(max_size=120).map(lambda b: b"PROXY " + b)))
def test_any_bytes_give_a_header_none_or_a_one_line_error(data):
    try:
        header = parse_proxy_header(data)
    except ProxyHeaderError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    if header is not None:
        assert 0 < header.length <= len(data)
        if header.source is not None:
            ipaddress.ip_address(header.source[0])
            assert 0 <= header.source[1] <= 65535


@given(pairs, st.data())
def test_a_flipped_bit_in_a_checksummed_header_is_never_taken_for_the_original(pair, data):
    header = format_v2(*pair, crc=True)
    bit = data.draw(st.integers(0, len(header) * 8 - 1))
    damaged = bytearray(header)
    damaged[bit // 8] ^= 1 << (bit % 8)
    try:
        parsed = parse_proxy_header(bytes(damaged))
    except ProxyHeaderError:
        return
    # Caught by the checksum, or incomplete (a longer length), or visibly another header: the CRC TLV's own type
    # byte is outside what the checksum can protect (0x03 -> 0x02 is an "authority" TLV and no checksum).
    if parsed is not None:
        assert parsed != parse_proxy_header(header) and parsed.tlv(PP2_TYPE_CRC32C) is None
