"""FEAT (RFC 2389): parse_features on bytes as servers send them, format_features, and the round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftpkit.protocol import Reply, ReplyError, ReplyReader, format_features, format_reply, parse_features


def features_of(wire: bytes) -> dict[str, str]:
    (reply,) = ReplyReader().feed(wire)
    assert isinstance(reply, Reply)
    return parse_features(reply)


def test_rfc_2389_reply():
    wire = (b"211-Extensions supported:\r\n MLST type*;size*;modify*;\r\n AUTH TLS\r\n REST STREAM\r\n UTF8\r\n"
            b" EPSV\r\n211 END\r\n")
    assert features_of(wire) == {"MLST": "type*;size*;modify*;", "AUTH": "TLS", "REST": "STREAM", "UTF8": "",
                                 "EPSV": ""}


def test_names_are_case_insensitive_parameters_kept_as_sent():
    wire = b"211-Features:\r\n mlst Type*;Size*;\r\n utf8\r\n Ftpkit-Probe WHOAMI;LASTPORT\r\n211 End\r\n"
    assert features_of(wire) == {"MLST": "Type*;Size*;", "UTF8": "", "FTPKIT-PROBE": "WHOAMI;LASTPORT"}


def test_lines_without_the_leading_space_bare_lf_and_blank_lines():
    wire = b"211-Features:\nMDTM\n\n  SIZE  \n\tUTF8\n211 End\n"
    assert features_of(wire) == {"MDTM": "", "SIZE": "", "UTF8": ""}


def test_the_code_repeated_on_every_line():
    wire = b"211-Features:\r\n211-MDTM\r\n211- REST STREAM\r\n211 End\r\n"
    assert features_of(wire) == {"MDTM": "", "REST": "STREAM"}


@pytest.mark.parametrize("wire", [b"211 no features\r\n", b"211 No features.\r\n", b"211-Features:\r\n211 End\r\n",
                                  b"502 FEAT not implemented.\r\n", b"500 'FEAT': command not understood.\r\n"])
def test_no_features(wire):
    assert features_of(wire) == {}


def test_a_name_on_several_lines_keeps_every_parameter():
    wire = b"211-Features:\r\n AUTH SSL\r\n AUTH TLS\r\n PBSZ\r\n PBSZ\r\n LANG en*;\r\n LANG ja\r\n211 End\r\n"
    assert features_of(wire) == {"AUTH": "SSL;TLS", "PBSZ": "", "LANG": "en*;ja"}


def test_format_lists_each_feature_after_a_space():
    reply = format_features([("EPSV", ""), ("MLST", "type*;size*;"), ("AUTH", "TLS"), ("AUTH", "SSL"), ("utf8", "")])
    assert format_reply(reply) == (b"211-Features:\r\n EPSV\r\n MLST type*;size*;\r\n AUTH TLS\r\n AUTH SSL\r\n"
                                   b" UTF8\r\n211 End\r\n")
    assert format_features({}) == Reply(211, ("No features.",))


@pytest.mark.parametrize(("name", "params"), [("", ""), ("REST STREAM", ""), ("UTF8\r", ""), ("MLST", "a\r\nb"),
                                              ("日本", "")])
def test_format_refuses_what_cannot_be_a_feature_line(name, params):
    with pytest.raises(ReplyError):
        format_features([(name, params)])


_names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12).map(str.upper)
_params = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.strip)


@given(features=st.dictionaries(_names.filter(lambda n: not n.startswith("211-")), _params, max_size=8))
def test_format_then_parse_is_identity(features):
    wire = format_reply(format_features(features))
    assert features_of(wire) == features
