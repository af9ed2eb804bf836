"""Host-port codecs: PORT, 227, EPRT, 229 and EPSV arguments."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpkit.protocol import (
    HostPort,
    HostPortError,
    ProtocolError,
    explain_port,
    format_eprt,
    format_epsv,
    format_pasv,
    format_port,
    parse_eprt,
    parse_epsv,
    parse_epsv_arg,
    parse_pasv,
    parse_port,
)

# --- HostPort and explain_port -----------------------------------------------------------------------------


def test_hostport_parts():
    hp = HostPort("192.168.0.203", 51183)
    assert (hp.p1, hp.p2, hp.family) == (199, 239, 1)
    assert str(hp) == "192.168.0.203:51183"
    v6 = HostPort("2001:db8::1", 21)
    assert v6.family == 2
    assert str(v6) == "[2001:db8::1]:21"


@pytest.mark.parametrize("port", [-1, 65536, 100_000])
def test_hostport_port_must_be_0_to_65535(port):
    with pytest.raises(HostPortError):
        HostPort("10.0.0.1", port)


@pytest.mark.parametrize(
    ("port", "text"),
    [
        (50000, "195*256+80 = 50000"),
        (51183, "199*256+239 = 51183"),
        (20266, "79*256+42 = 20266"),
        (0, "0*256+0 = 0"),
        (255, "0*256+255 = 255"),
        (256, "1*256+0 = 256"),
        (65535, "255*256+255 = 65535"),
    ],
)
def test_explain_port(port, text):
    assert explain_port(port) == text


def test_errors_are_protocol_errors():
    assert issubclass(HostPortError, ProtocolError)


# --- PORT --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "host", "port"),
    [
        ("192,168,0,203,199,239", "192.168.0.203", 51183),  # real capture
        ("192,168,71,11,130,39", "192.168.71.11", 33319),  # real capture
        ("0,0,0,0,0,0", "0.0.0.0", 0),
        ("255,255,255,255,255,255", "255.255.255.255", 65535),
        ("192,168,000,001,004,001", "192.168.0.1", 1025),  # leading zeros, as some clients send
        (" 192, 168, 0, 1, 4, 1 ", "192.168.0.1", 1025),  # blanks around the numbers are tolerated
    ],
)
def test_parse_port(arg, host, port):
    assert parse_port(arg) == HostPort(host, port)


@pytest.mark.parametrize(
    "arg",
    [
        "",
        "192,168,0,1,4",
        "192,168,0,1,4,1,7",
        "192.168.0.1,4,1",
        "a,b,c,d,e,f",
        "256,168,0,1,4,1",
        "192,168,0,1,256,0",
        "192,168,0,1,4,256",
        "192,168,0,1,4,1000",
        "-1,168,0,1,4,1",
        "١٩٢,١٦٨,٠,١,٤,١",  # Arabic-Indic digits are digits to Python, not to FTP
        "(192,168,0,1,4,1)",
    ],
)
def test_parse_port_refuses(arg):
    with pytest.raises(HostPortError):
        parse_port(arg)


def test_format_port():
    assert format_port(HostPort("192.168.0.203", 51183)) == "192,168,0,203,199,239"
    assert format_port(HostPort("10.0.0.1", 0)) == "10,0,0,1,0,0"


@pytest.mark.parametrize("host", ["::1", "example.com", "10.0.0.256", ""])
def test_format_port_and_pasv_need_an_ipv4_address(host):
    with pytest.raises(HostPortError):
        format_port(HostPort(host, 21))
    with pytest.raises(HostPortError):
        format_pasv(HostPort(host, 21))


# --- 227 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("Entering Passive Mode (192,168,0,101,79,42).", "192.168.0.101", 20266),  # real capture
        ("Entering Passive Mode (192,168,71,254,190,46)", "192.168.71.254", 48686),  # real capture
        ("Entering Passive Mode (192,168,71,254,21,109)", "192.168.71.254", 5485),  # real capture
        ("227 Entering Passive Mode (192,168,0,101,79,42)", "192.168.0.101", 20266),  # the whole line
        ("Entering Passive Mode 10,0,0,1,4,1", "10.0.0.1", 1025),
        ("=10,0,0,1,4,1", "10.0.0.1", 1025),
        ("227 =10,0,0,1,4,1", "10.0.0.1", 1025),
        ("Entering Passive Mode ( 10, 0, 0, 1, 4, 1 )", "10.0.0.1", 1025),
    ],
)
def test_parse_pasv_is_tolerant(text, host, port):
    assert parse_pasv(text) == HostPort(host, port)


@pytest.mark.parametrize(
    "text",
    [
        "Entering Passive Mode",
        "Entering Passive Mode (10,0,0,1,4)",
        "Entering Passive Mode (256,0,0,1,4,1)",
        "Entering Passive Mode (10,0,0,1,256,1)",
        "Entering Passive Mode (10,0,0,1,4,256)",
        "Entering Passive Mode (1000,0,0,1,4,1)",  # must not be read as 000,0,0,1,4,1
        "Entering Passive Mode (10,0,0,1,4,1000)",  # must not be read as ...,4,100
        "Entering Passive Mode (10.0.0.1:1025)",
        "Entering Passive Mode (١٠,٠,٠,١,٤,١)",
    ],
)
def test_parse_pasv_refuses(text):
    with pytest.raises(HostPortError):
        parse_pasv(text)


def test_format_pasv_always_uses_parentheses():
    assert format_pasv(HostPort("192.168.0.101", 20266)) == "Entering Passive Mode (192,168,0,101,79,42)."


# --- EPRT --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "host", "port"),
    [
        ("|1|132.235.1.2|6275|", "132.235.1.2", 6275),  # RFC 2428
        ("|2|1080::8:800:200C:417A|5282|", "1080::8:800:200c:417a", 5282),  # RFC 2428, normalized
        ("!1!132.235.1.2!6275!", "132.235.1.2", 6275),
        ("#2#::1#21#", "::1", 21),
        ("~2~2001:DB8:0:0:0:0:0:1~0~", "2001:db8::1", 0),
        ("  |1|10.0.0.1|65535|  ", "10.0.0.1", 65535),
    ],
)
def test_parse_eprt(arg, host, port):
    assert parse_eprt(arg) == HostPort(host, port)


@pytest.mark.parametrize(
    "arg",
    [
        "",
        "|1|",
        "|3|132.235.1.2|6275|",  # no such network protocol
        "|0|132.235.1.2|6275|",
        "||132.235.1.2|6275|",
        "|ipv4|132.235.1.2|6275|",
        "|1|::1|21|",  # protocol and address family disagree
        "|2|132.235.1.2|21|",
        "|1|132.235.1.256|21|",
        "|1|ftp.example.com|21|",
        "|2|1080:::1|21|",
        "|1||21|",
        "|1|10.0.0.1|65536|",
        "|1|10.0.0.1||",
        "|1|10.0.0.1|-1|",
        "|1|10.0.0.1|0x15|",
        "|1|10.0.0.1|٢١|",
        "|1|10.0.0.1|21",
        "|1|10.0.0.1|21|x|",
        "1|10.0.0.1|21|",
        "\x011\x0110.0.0.1\x0121\x01",  # a delimiter outside 33-126
        "é1é10.0.0.1é21é",
    ],
)
def test_parse_eprt_refuses(arg):
    with pytest.raises(HostPortError):
        parse_eprt(arg)


def test_format_eprt():
    assert format_eprt(HostPort("132.235.1.2", 6275)) == "|1|132.235.1.2|6275|"
    assert format_eprt(HostPort("1080::8:800:200C:417A", 5282)) == "|2|1080::8:800:200c:417a|5282|"


@pytest.mark.parametrize("host", ["example.com", "10.0.0.256", "1080:::1"])
def test_format_eprt_refuses_non_addresses(host):
    with pytest.raises(HostPortError):
        format_eprt(HostPort(host, 21))


# --- 229 and EPSV ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("Entering Extended Passive Mode (|||6446|)", 6446),
        ("229 Entering Extended Passive Mode (|||6446|)", 6446),
        ("Entering Extended Passive Mode (!!!6446!).", 6446),
        ("EPSV ok (|||0|)", 0),
        ("(|||65535|)", 65535),
    ],
)
def test_parse_epsv(text, port):
    assert parse_epsv(text) == port


@pytest.mark.parametrize(
    "text",
    [
        "Entering Extended Passive Mode",
        "Entering Extended Passive Mode (||6446|)",
        "Entering Extended Passive Mode (|||6446|",
        "Entering Extended Passive Mode (|||65536|)",
        "Entering Extended Passive Mode (|||abc|)",
        "Entering Extended Passive Mode (||||)",
        "Entering Extended Passive Mode (|||64|46|)",
        "Entering Extended Passive Mode (|!|6446|)",
    ],
)
def test_parse_epsv_refuses(text):
    with pytest.raises(HostPortError):
        parse_epsv(text)


def test_format_epsv():
    assert format_epsv(6446) == "Entering Extended Passive Mode (|||6446|)"
    for bad in (-1, 65536):
        with pytest.raises(HostPortError):
            format_epsv(bad)


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        (None, None), ("", None), ("  ", None), ("ALL", "ALL"), ("all", "ALL"), (" All ", "ALL"),
        ("1", 1), ("2", 2),
    ],
)
def test_parse_epsv_arg(arg, value):
    assert parse_epsv_arg(arg) == value


@pytest.mark.parametrize("arg", ["3", "0", "ALLX", "1 2", "ipv4"])
def test_parse_epsv_arg_refuses(arg):
    with pytest.raises(HostPortError):
        parse_epsv_arg(arg)


# --- properties --------------------------------------------------------------------------------------------

_ports = st.integers(min_value=0, max_value=65535)
_v4 = st.ip_addresses(v=4).map(str)
_any_ip = st.ip_addresses().map(str)


@given(host=_v4, port=_ports)
def test_port_round_trip(host, port):
    hp = HostPort(host, port)
    assert parse_port(format_port(hp)) == hp


@given(host=_v4, port=_ports)
def test_pasv_round_trip(host, port):
    hp = HostPort(host, port)
    assert parse_pasv(format_pasv(hp)) == hp
    assert parse_pasv("227 " + format_pasv(hp)) == hp


@given(host=_any_ip, port=_ports)
def test_eprt_round_trip(host, port):
    hp = HostPort(host, port)
    assert parse_eprt(format_eprt(hp)) == hp


@given(port=_ports)
def test_epsv_round_trip(port):
    assert parse_epsv(format_epsv(port)) == port
    assert parse_epsv("229 " + format_epsv(port)) == port


@given(port=_ports)
def test_six_number_port_is_p1_times_256_plus_p2(port):
    hp = HostPort("10.0.0.1", port)
    p1, p2 = map(int, format_port(hp).split(",")[4:])
    assert p1 * 256 + p2 == port
    assert explain_port(port) == f"{p1}*256+{p2} = {port}"


@given(
    numbers=st.lists(st.integers(min_value=0, max_value=255), min_size=6, max_size=6),
    where=st.integers(min_value=0, max_value=5),
    bad=st.integers(min_value=256, max_value=999),
)
def test_out_of_range_byte_is_an_error(numbers, where, bad):
    numbers[where] = bad
    six = ",".join(map(str, numbers))
    with pytest.raises(HostPortError):
        parse_port(six)
    with pytest.raises(HostPortError):
        parse_pasv(f"Entering Passive Mode ({six}).")


_hostport_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789,()|!. :abcdefABCDEF-\n", max_size=60),
    st.lists(st.integers(0, 1200).map(str), min_size=1, max_size=8).map(",".join),
)


@settings(max_examples=300)
@given(text=_hostport_text)
def test_parsing_arbitrary_text_raises_only_hostport_errors(text):
    for parser in (parse_port, parse_pasv, parse_eprt, parse_epsv, parse_epsv_arg):
        try:
            result = parser(text)
        except HostPortError:
            continue
        # Whatever is accepted is usable: an IPv4/IPv6 address and a port in range.
        if isinstance(result, HostPort):
            assert 0 <= result.port <= 65535
            assert str(ipaddress.ip_address(result.host)) == result.host
        elif parser is parse_epsv:
            assert 0 <= result <= 65535
