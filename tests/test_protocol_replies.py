"""Replies: format_reply (server side) and ReplyReader (client side)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpkit.protocol import MalformedReply, ProtocolError, Reply, ReplyError, ReplyReader, format_reply
from ftpkit.protocol.replies import printable


def parse(data: bytes, **kwargs: int) -> list:
    return ReplyReader(**kwargs).feed(data)


def parse_chunks(chunks: list[bytes], **kwargs: int) -> list:
    reader = ReplyReader(**kwargs)
    return [event for chunk in chunks for event in reader.feed(chunk)]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


FEAT = b"211-Features:\r\n MDTM\r\n SIZE\r\n UTF8\r\n211 End\r\n"
FEAT_REPLY = Reply(211, ("Features:", " MDTM", " SIZE", " UTF8", "End"))


# --- the Reply value ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 99, 600, 999, -220])
def test_reply_code_must_be_100_to_599(code):
    with pytest.raises(ReplyError):
        Reply(code, ("x",))


def test_reply_needs_a_line():
    with pytest.raises(ReplyError):
        Reply(200, ())


def test_reply_of_splits_text_on_newlines():
    assert Reply.of(226) == Reply(226, ("",))
    assert Reply.of(211, "a\nb\nc") == Reply(211, ("a", "b", "c"))
    assert Reply.of(211, ["a", "b"]) == Reply(211, ("a", "b"))
    assert Reply.of(211, "a\nb").text == "a\nb"
    assert Reply.of(211, "a\nb").first == "a"
    assert str(Reply.of(250, "ok")) == "250 ok"


@pytest.mark.parametrize(
    ("code", "kind", "preliminary", "final", "success", "error"),
    [
        (150, 1, True, False, False, False),
        (226, 2, False, True, True, False),
        (331, 3, False, True, True, False),
        (425, 4, False, True, False, True),
        (550, 5, False, True, False, True),
    ],
)
def test_reply_kind_predicates(code, kind, preliminary, final, success, error):
    reply = Reply(code)
    assert (reply.kind, reply.is_preliminary, reply.is_final, reply.is_success, reply.is_error) == (
        kind, preliminary, final, success, error,
    )  # fmt: skip


# --- formatting --------------------------------------------------------------------------------------------


def test_format_single_line():
    assert format_reply(Reply(200, ("Command okay.",))) == b"200 Command okay.\r\n"
    assert format_reply(Reply.of(226)) == b"226 \r\n"
    assert Reply(220, ("hi",)).to_bytes() == b"220 hi\r\n"


def test_format_multi_line():
    assert format_reply(FEAT_REPLY) == FEAT
    assert format_reply(Reply(214, ("a", "b"))) == b"214-a\r\n214 b\r\n"


def test_middle_line_that_looks_final_is_indented():
    reply = Reply(211, ("Status:", "211 this is not the end", "211 End"))
    wire = format_reply(reply)
    assert wire == b"211-Status:\r\n 211 this is not the end\r\n211 211 End\r\n"
    assert parse(wire) == [Reply(211, ("Status:", " 211 this is not the end", "211 End"))]


def test_middle_line_that_is_only_the_code_is_indented():
    # The reader ends a multi-line reply at a bare "211" line too, so the formatter must indent it.
    wire = format_reply(Reply(211, ("a", "211", "b")))
    assert wire == b"211-a\r\n 211\r\n211 b\r\n"
    assert parse(wire) == [Reply(211, ("a", " 211", "b"))]


def test_middle_lines_with_other_codes_or_a_hyphen_are_not_indented():
    reply = Reply(211, ("a", "220 other code", "211-hyphen", "2110", "z"))
    wire = format_reply(reply)
    assert wire == b"211-a\r\n220 other code\r\n211-hyphen\r\n2110\r\n211 z\r\n"
    assert parse(wire) == [reply]


@pytest.mark.parametrize("lines", [("a\r\nb",), ("a\n",), ("ok", "x\ry", "end"), ("\r",)])
def test_format_refuses_cr_and_lf_in_lines(lines):
    with pytest.raises(ReplyError):
        format_reply(Reply(200, lines))


def test_printable_escapes_what_a_reply_line_cannot_carry():
    assert printable("a\rb\nc\x00d") == "a\\rb\\nc\\0d"
    assert printable("plain text, ü, \udcff") == "plain text, ü, \udcff"
    assert format_reply(Reply.of(550, printable("/x\ry: No such file or directory."))) == \
        b"550 /x\\ry: No such file or directory.\r\n"


@given(st.text())
def test_printable_text_always_formats_as_one_line(text):
    data = format_reply(Reply(550, (printable(text),)))
    assert data.count(b"\n") == 1 and b"\x00" not in data and data.index(b"\r") == len(data) - 2


def test_format_refuses_what_cannot_be_encoded_with_a_reply_error():
    with pytest.raises(ReplyError):
        format_reply(Reply(200, ("\ud800",)))
    with pytest.raises(ReplyError):
        format_reply(Reply(200, ("日本",)), encoding="ascii")
    assert issubclass(ReplyError, ProtocolError)


# --- parsing -----------------------------------------------------------------------------------------------


def test_parse_single_line():
    assert parse(b"220 Service ready for new user.\r\n") == [Reply(220, ("Service ready for new user.",))]


def test_parse_multi_line():
    assert parse(FEAT) == [FEAT_REPLY]


def test_parse_bare_lf():
    assert parse(FEAT.replace(b"\r\n", b"\n")) == [FEAT_REPLY]
    assert parse(b"200 ok\n") == [Reply(200, ("ok",))]


def test_three_digits_and_no_text():
    assert parse(b"226\r\n") == [Reply(226, ("",))]
    assert parse(b"211-a\r\n211\r\n") == [Reply(211, ("a", ""))]


def test_several_replies_in_one_chunk():
    assert parse(b"331 pw\r\n230 in\r\n" + FEAT + b"215 UNIX\r\n") == [
        Reply(331, ("pw",)), Reply(230, ("in",)), FEAT_REPLY, Reply(215, ("UNIX",)),
    ]  # fmt: skip


def test_multi_line_ends_only_at_its_own_code_and_a_space():
    data = b"211-start\r\n220 other\r\n211-still\r\n212 no\r\n 211 indented\r\n211 end\r\n"
    assert parse(data) == [Reply(211, ("start", "220 other", "211-still", "212 no", " 211 indented", "end"))]


def test_empty_lines_inside_a_multi_line_reply_are_kept():
    assert parse(b"214-a\r\n\r\n\r\n214 b\r\n") == [Reply(214, ("a", "", "", "b"))]


def test_stray_empty_line_between_replies_is_ignored():
    assert parse(b"\r\n220 hi\r\n\n") == [Reply(220, ("hi",))]


@pytest.mark.parametrize("size", [1, 2, 5, 13])
def test_reply_split_across_chunks(size):
    reader = ReplyReader()
    events = []
    for i in range(0, len(FEAT), size):
        events += reader.feed(FEAT[i : i + size])
        if i + size < len(FEAT):
            assert reader.in_reply
    assert events == [FEAT_REPLY]
    assert not reader.in_reply


def test_every_split_point_gives_the_same_reply():
    for cut in range(len(FEAT) + 1):
        assert parse_chunks([FEAT[:cut], FEAT[cut:]]) == [FEAT_REPLY], cut


def test_in_reply():
    reader = ReplyReader()
    assert not reader.in_reply
    reader.feed(b"211-a\r\n")
    assert reader.in_reply  # a multi-line reply is open
    reader.feed(b"211 b\r\n")
    assert not reader.in_reply
    reader.feed(b"22")
    assert reader.in_reply  # a partial line


def test_non_utf8_text_round_trips_through_surrogateescape():
    raw = "日本語.txt".encode("shift_jis")
    wire = b"150 Opening data connection for " + raw + b"\r\n"
    (reply,) = parse(wire)
    assert reply.code == 150
    assert reply.first.encode("utf-8", "surrogateescape") == b"Opening data connection for " + raw
    assert format_reply(reply) == wire


def test_utf8_text():
    assert parse("257 \"/日本語\" created\r\n".encode()) == [Reply(257, ('"/日本語" created',))]


# --- malformed input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"hello", "line does not start with a three-digit reply code"),
        (b"2x0 ok", "line does not start with a three-digit reply code"),
        (b"600 too big", "line does not start with a three-digit reply code"),
        (b"099 too small", "line does not start with a three-digit reply code"),
        (b"22", "line does not start with a three-digit reply code"),
        (b"220x", "reply code not followed by a space or a hyphen"),
        (b"2200 four digits", "reply code not followed by a space or a hyphen"),
    ],
)
def test_malformed_lines_are_events_and_reading_goes_on(line, reason):
    assert parse(line + b"\r\n200 ok\r\n") == [MalformedReply(reason, line), Reply(200, ("ok",))]


def test_multi_line_reply_larger_than_the_limit():
    data = b"211-start\r\n" + b"line of text\r\n" * 20 + b"211 end\r\n200 next\r\n"
    events = parse(data, max_reply=100)
    assert events[0] == MalformedReply("multi-line 211 reply longer than 100 bytes", b"line of text")
    # The rest of the abandoned reply is reported line by line, then reading is back in step.
    assert events[-2:] == [Reply(211, ("end",)), Reply(200, ("next",))]
    assert all(isinstance(e, MalformedReply) for e in events[:-2])


def test_over_long_line_is_reported_the_same_whole_or_in_chunks():
    data = b"200 " + b"x" * 200 + b"\r\n220 next\r\n"
    expected = [MalformedReply("line longer than 50 bytes", data[:50]), Reply(220, ("next",))]
    assert parse(data, max_reply=50) == expected
    for size in (1, 7, 10, 60):
        reader = ReplyReader(max_reply=50)
        events = []
        for i in range(0, len(data), size):
            events += reader.feed(data[i : i + size])
        assert events == expected, size


def test_over_long_line_inside_a_multi_line_reply_abandons_it():
    data = b"211-start\r\n" + b"y" * 80 + b"\r\n211 end\r\n"
    events = parse(data, max_reply=50)
    assert events == [MalformedReply("line longer than 50 bytes", b"y" * 50), Reply(211, ("end",))]


# --- properties --------------------------------------------------------------------------------------------

_text = st.text(
    st.characters(categories=["L", "M", "N", "P", "S", "Zs"], exclude_characters="\r\n"), max_size=30
)


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    code = draw(st.integers(min_value=100, max_value=599))
    # Lines that look like the closing line are drawn often, so the indentation path is exercised.
    line = st.one_of(
        _text, st.just(str(code)), _text.map(lambda t: f"{code} {t}"), _text.map(lambda t: f"{code}-{t}")
    )
    return Reply(code, tuple(draw(st.lists(line, min_size=1, max_size=6))))


def _clashes(reply: Reply, line: str) -> bool:
    code = str(reply.code)
    return line == code or line.startswith(code + " ")


@given(reply=replies())
def test_format_then_parse_is_identity(reply):
    wire = format_reply(reply)
    (parsed,) = parse(wire)
    middle_clash = any(_clashes(reply, line) for line in reply.lines[1:-1])
    if not middle_clash:
        assert parsed == reply
    else:
        # Still one reply with the same code and lines, the clashing middle lines indented by one space.
        assert parsed.code == reply.code
        assert len(parsed.lines) == len(reply.lines)
        assert (parsed.lines[0], parsed.lines[-1]) == (reply.lines[0], reply.lines[-1])
        for got, sent in zip(parsed.lines[1:-1], reply.lines[1:-1], strict=True):
            assert got == (" " + sent if _clashes(reply, sent) else sent)


@given(replies=st.lists(replies(), min_size=1, max_size=4), cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_a_stream_of_replies_parses_the_same_in_any_chunking(replies, cuts):
    wire = b"".join(format_reply(r) for r in replies)
    whole = parse(wire)
    assert len(whole) == len(replies)
    assert [r.code for r in whole] == [r.code for r in replies]
    assert parse_chunks(split_at(wire, cuts)) == whole


_interesting = st.sampled_from([b"\r", b"\n", b"\r\n", b"211", b"211-", b"211 ", b"2", b" ", b"x", b"\xff"])
_wire = st.one_of(st.binary(max_size=300), st.lists(_interesting, max_size=100).map(b"".join))


@settings(max_examples=300)
@given(data=_wire, cuts=st.lists(st.integers(0, 400), max_size=40), limit=st.sampled_from([8, 30, 1 << 20]))
def test_arbitrary_bytes_never_raise_and_chunking_does_not_matter(data, cuts, limit):
    whole = parse(data, max_reply=limit)
    assert all(isinstance(e, Reply | MalformedReply) for e in whole)
    assert parse_chunks(split_at(data, cuts), max_reply=limit) == whole
