"""The ClientHello screen on bytes: real ClientHellos from Python's ssl (TLS 1.2 and 1.3, with and without ALPN and
SNI), split anywhere and across records; garbage refused at its first telling byte; arbitrary bytes never raise
anything but NotClientHello."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpkit.tls_hello import (
    MAX_RECORD,
    ClientHello,
    NotClientHello,
    alpn_refusal,
    fatal_alert,
    name_matches,
    read_client_hello,
    sni_refusal,
)


def client_hello(alpn: list[str] | None = None, hostname: str | None = "ftp.example.com",
                 maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> bytes:
    """The first flight of a real TLS client (Python's ssl over memory BIOs)."""
    ctx = ssl.create_default_context()
    ctx.maximum_version = maximum
    if hostname is None:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("alpn", [None, ["ftp"], ["http/1.1"], ["h2", "http/1.1", "ftp"]])
@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("hostname", ["ftp.example.com", None])
def test_real_client_hellos_are_read_with_their_alpn(alpn, maximum, hostname):
    data = client_hello(alpn, hostname, maximum)
    expected = ClientHello(alpn=tuple(name.encode() for name in alpn) if alpn else None, server_name=hostname)
    assert read_client_hello(data) == expected
    assert read_client_hello(data + b"\x14\x03\x03\x00\x01\x01") == expected  # what follows is not looked at
    for cut in range(len(data)):
        assert read_client_hello(data[:cut]) is None  # never a verdict before the hello is whole


def test_a_client_hello_split_across_records():
    data = client_hello(["http/1.1"])
    body = data[5:]
    split = data[:1] + data[1:3]
    records = b"".join(split + len(part).to_bytes(2, "big") + part for part in (body[:7], body[7:100], body[100:]))
    assert read_client_hello(records) == ClientHello(alpn=(b"http/1.1",), server_name="ftp.example.com")
    assert read_client_hello(records[:-1]) is None


@pytest.mark.parametrize("garbage, reason", [
    (b"G", "not a TLS handshake record"),  # one byte decides: HTTP, an FTP command, a NUL...
    (b"USER alice\r\n", "not a TLS handshake record"),
    (b"\x00", "not a TLS handshake record"),
    (b"\x80\x2e", "SSL 2.0"),
    (b"\x16\x02", "not TLS"),
    (b"\x16\x03\x01\xff\xff", "handshake record of 65535 bytes"),
    (b"\x16\x03\x01\x00\x00", "handshake record of 0 bytes"),
    (b"\x16\x03\x01\x00\x04\x02", "not a ClientHello"),
    (b"\x16\x03\x01\x00\x04\x01\x02\x00\x00", "a ClientHello of 131072 bytes"),
    (b"\x16\x03\x01\x00\x02\x01\x00\x17\x03\x03", "another type before the ClientHello is complete"),
])
def test_garbage_is_refused_as_soon_as_it_tells(garbage, reason):
    with pytest.raises(NotClientHello, match=reason):
        read_client_hello(garbage)


def _with_extensions(extensions: bytes) -> bytes:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += len(extensions).to_bytes(2, "big") + extensions
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def _alpn(*names: bytes) -> bytes:
    names_bytes = b"".join(len(n).to_bytes(1, "big") + n for n in names)
    data = len(names_bytes).to_bytes(2, "big") + names_bytes
    return b"\x00\x10" + len(data).to_bytes(2, "big") + data


def test_hand_made_hellos():
    assert read_client_hello(_with_extensions(b"")) == ClientHello(alpn=None)
    assert read_client_hello(_with_extensions(_alpn(b"ftp"))) == ClientHello(alpn=(b"ftp",))
    with pytest.raises(NotClientHello, match="twice"):
        read_client_hello(_with_extensions(_alpn(b"ftp") + _alpn(b"ftp")))
    with pytest.raises(NotClientHello, match="empty protocol name"):
        read_client_hello(_with_extensions(_alpn(b"")))
    with pytest.raises(NotClientHello, match="empty protocol list"):
        read_client_hello(_with_extensions(b"\x00\x10\x00\x02\x00\x00"))
    with pytest.raises(NotClientHello, match="runs past the end"):
        read_client_hello(_with_extensions(b"\x00\x10\x00\x05\x00\x09\x03ftp"))


def test_alpn_refusal():
    assert alpn_refusal(ClientHello(alpn=None), b"ftp") is None
    assert alpn_refusal(ClientHello(alpn=(b"http/1.1", b"ftp")), b"ftp") is None
    reason = alpn_refusal(ClientHello(alpn=(b"http/1.1", b"h2")), b"ftp")
    assert reason is not None and "http/1.1, h2" in reason and "not ftp" in reason


def test_fatal_alert_is_a_tls_alert_record():
    assert fatal_alert(120) == bytes([21, 3, 3, 0, 2, 2, 120])


_hello = client_hello(["http/1.1", "ftp"])


@settings(max_examples=500)
@given(st.one_of(
    st.binary(max_size=600),
    st.builds(lambda cut, junk: _hello[:cut] + junk, st.integers(0, len(_hello)), st.binary(max_size=64)),
    st.builds(lambda pos, byte: _hello[:pos] + bytes([byte]) + _hello[pos + 1:],
              st.integers(0, len(_hello) - 1), st.integers(0, 255)),
))
def test_any_bytes_give_a_hello_none_or_not_client_hello(data):
    try:
        result = read_client_hello(data)
    except NotClientHello:
        return
    assert result is None or isinstance(result, ClientHello)
    if result is None:
        assert len(data) < (1 << 16) + 5 * ((1 << 16) // MAX_RECORD + 2)  # undecided only while it may still grow


@pytest.mark.parametrize("host, pattern, matches", [
    ("ftp.example.com", "ftp.example.com", True),
    ("FTP.Example.COM.", "ftp.example.com", True),  # case and a trailing dot do not count
    ("ftp.example.com", "*.example.com", True),
    ("example.com", "*.example.com", False),  # a wildcard stands for exactly one label
    ("a.b.example.com", "*.example.com", False),
    ("ftp.example.org", "*.example.com", False),
    ("xn--bcher-kva.example.com", "*.example.com", False),  # not for an A-label (RFC 6125 §6.4.3)
    ("ftp.example.com", "f*.example.com", False),  # partial wildcards are not honoured
    ("ftp.example.com", "ftp.*.com", False),  # only the left-most label
    ("example.com", "*.com", False),  # not for a name of two labels
    ("ftp.example.com", "*", False),
    ("", "ftp.example.com", False),
])
def test_certificate_names_match_as_rfc_6125_says(host, pattern, matches):
    assert name_matches(host, pattern) is matches


def test_strict_sni_refuses_other_names_and_accepts_no_sni():
    names = (("ftp.example.com", "*.files.example.com"), ("127.0.0.1", "::1"))
    for ok in ("ftp.example.com", "eu.files.example.com", "127.0.0.1", "0:0::1"):
        assert sni_refusal(ClientHello(alpn=None, server_name=ok), *names) is None, ok
    assert sni_refusal(ClientHello(alpn=None, server_name=None), *names) is None  # no SNI: served
    refusal = sni_refusal(ClientHello(alpn=None, server_name="www.example.com"), *names)
    assert refusal == "the client asks for the server name 'www.example.com', which the certificate does not name"
    assert sni_refusal(ClientHello(alpn=None, server_name="10.0.0.1"), *names) is not None
    assert read_client_hello(client_hello(None, "www.example.com")) == ClientHello(alpn=None,
                                                                                server_name="www.example.com")
