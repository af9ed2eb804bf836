"""The 257 pathname (RFC 959 appendix II): format_257_path and parse_257_path, on bytes and on text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftpkit.protocol import Reply, ReplyError, ReplyReader, format_257_path, format_reply, parse_257_path


@pytest.mark.parametrize(("text", "path"), [
    ('"/usr/dm" created.', "/usr/dm"),
    ('"/dir ""with"" quotes" created', '/dir "with" quotes'),
    ('"/my dir" is the current directory.', "/my dir"),
    ('"/" is current directory "really"', "/"),
    ('"/a"""', '/a"'),
    ('"""lead"', '"lead'),
    ('""', ""),
    ('"/日本語/フォルダ" created', "/日本語/フォルダ"),
    ('MKD command successful: "/new"', "/new"),
    ('"/a"b" is your current location', '/a"b'),  # pure-ftpd does not double quotes
    ('"/日本"語" : The directory was successfully created', '/日本"語'),
])
def test_parse(text, path):
    assert parse_257_path(text) == path


@pytest.mark.parametrize("text", ["/home/user is the current directory", "", '"/unterminated', '"/a""'])
def test_a_reply_without_a_quoted_path_is_a_reply_error(text):
    with pytest.raises(ReplyError, match="257"):
        parse_257_path(text)


def test_format_doubles_quotes():
    assert format_257_path('/dir "with" quotes') == '"/dir ""with"" quotes"'
    assert format_257_path("/") == '"/"'


def test_on_the_wire_non_ascii():
    wire = format_reply(Reply.of(257, format_257_path('/日本"語') + " created."))
    assert wire == '257 "/日本""語" created.\r\n'.encode()
    (reply,) = ReplyReader().feed(wire)
    assert parse_257_path(reply.text) == '/日本"語'


@given(path=st.text(st.characters(exclude_characters="\r\n"), max_size=40),
       comment=st.text(st.characters(exclude_characters="\r\n"), max_size=20))
def test_format_then_parse_is_identity(path, comment):
    assert parse_257_path(format_257_path(path) + " " + comment) == path
