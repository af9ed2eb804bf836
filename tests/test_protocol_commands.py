"""Command lines: CommandReader (server side) and format_command (client side)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpkit.protocol import BadLine, Command, CommandError, CommandReader, LineTooLong, ProtocolError
from ftpkit.protocol.commands import DEFAULT_MAX_LINE, format_command, parse_command_line

IAC, IP, DM, WILL, WONT, DO, DONT = 255, 244, 242, 251, 252, 253, 254


def read(data: bytes, **kwargs: int) -> list:
    return CommandReader(**kwargs).feed(data)


def read_chunks(chunks: list[bytes], **kwargs: int) -> list:
    reader = CommandReader(**kwargs)
    return [event for chunk in chunks for event in reader.feed(chunk)]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- parsing -----------------------------------------------------------------------------------------------


def test_simple_command_with_argument():
    assert read(b"USER anonymous\r\n") == [Command("USER", "anonymous")]


def test_command_without_argument_has_none():
    assert read(b"PWD\r\n") == [Command("PWD", None)]


@pytest.mark.parametrize("line", [b"TYPE i", b"type i", b"TyPe i", b"tYPE i"])
def test_verb_is_case_insensitive_and_argument_case_is_kept(line):
    assert read(line + b"\r\n") == [Command("TYPE", "i")]


def test_bare_lf_ends_a_line_like_crlf():
    assert read(b"NOOP\nSYST\r\n") == [Command("NOOP"), Command("SYST")]


def test_argument_spaces_are_kept_verbatim():
    assert read(b"STOR  my  file.txt \r\n") == [Command("STOR", " my  file.txt ")]


def test_trailing_space_gives_empty_argument_not_none():
    assert read(b"NOOP \r\n") == [Command("NOOP", "")]


def test_only_the_last_cr_is_stripped():
    # A CR inside the argument is data; only the one before LF belongs to the line ending.
    assert read(b"STOR a\r\r\n") == [Command("STOR", "a\r")]


def test_several_commands_in_one_chunk():
    data = b"USER bob\r\nPASS secret\r\nSYST\r\nTYPE I\r\n"
    assert read(data) == [
        Command("USER", "bob"), Command("PASS", "secret"), Command("SYST"), Command("TYPE", "I"),
    ]  # fmt: skip


def test_incomplete_line_waits_for_its_ending():
    reader = CommandReader()
    assert reader.feed(b"RETR fi") == []
    assert reader.buffered == len(b"RETR fi")
    assert reader.feed(b"le.txt\r") == []
    assert reader.feed(b"\n") == [Command("RETR", "file.txt")]
    assert reader.buffered == 0


@pytest.mark.parametrize("line", [b"", b"   ", b"\t"])
def test_empty_lines_are_bad_lines(line):
    (event,) = read(line + b"\r\n")
    assert isinstance(event, BadLine)
    assert event.reason == "empty command line"


@pytest.mark.parametrize(
    "line",
    [b"123 x", b"3USR bob", b"US-R bob", b" USER bob", b"USER\tbob", b"ABCDEFGHI x", b"XSHA25600 x", b"!",
     b"\x00NOOP"],
)
def test_non_letter_or_overlong_verbs_are_bad_lines(line):
    (event,) = read(line + b"\r\n")
    assert event == BadLine("command verb must be a letter and up to 7 more letters or digits", line)


@pytest.mark.parametrize("verb", ["XSHA1", "XSHA256", "xsha512", "XMD5", "A1"])
def test_verbs_with_digits_after_the_first_letter(verb):
    """The digest commands WinSCP sends (XSHA256 ...) are commands, not garbage."""
    assert read(f"{verb} a file\r\n".encode()) == [Command(verb.upper(), "a file")]
    assert format_command(verb, "x") == f"{verb.upper()} x\r\n".encode()


def test_non_ascii_verb_is_a_bad_line():
    (event,) = read("ÜSER bob\r\n".encode())
    assert event == BadLine("command verb is not ASCII", "ÜSER bob".encode())


def test_eight_letter_verb_is_accepted():
    assert read(b"abcdefgh\r\n") == [Command("ABCDEFGH")]


def test_parse_command_line_directly():
    assert parse_command_line(b"cwd /pub\r") == Command("CWD", "/pub")
    assert parse_command_line(b"") == BadLine("empty command line", b"")


# --- line-length limit -------------------------------------------------------------------------------------


def test_max_line_below_16_is_refused():
    with pytest.raises(ValueError):
        CommandReader(max_line=15)


def test_line_at_the_limit_is_accepted_and_one_more_byte_is_not():
    at_limit = b"STOR " + b"x" * 11  # 16 bytes
    assert read(at_limit + b"\r\n", max_line=16) == [Command("STOR", "x" * 11)]
    assert read(at_limit + b"\n", max_line=16) == [Command("STOR", "x" * 11)]
    assert read(at_limit + b"y\r\n", max_line=16) == [LineTooLong(16)]
    assert read(at_limit + b"y\n", max_line=16) == [LineTooLong(16)]


def test_default_limit():
    assert DEFAULT_MAX_LINE == 4096
    ok = b"STOR " + b"a" * (4096 - 5)
    assert read(ok + b"\r\n") == [Command("STOR", "a" * 4091)]
    assert read(ok + b"a\r\n") == [LineTooLong(4096)]


def test_long_line_then_next_line_parses_in_one_chunk():
    data = b"STOR " + b"x" * 100 + b"\r\nNOOP\r\n"
    assert read(data, max_line=16) == [LineTooLong(16), Command("NOOP")]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 17, 64])
def test_long_line_in_small_chunks_never_buffers_past_the_limit(size):
    data = b"STOR " + b"x" * 1000 + b"\r\nNOOP\r\n"
    reader = CommandReader(max_line=16)
    events = []
    for i in range(0, len(data), size):
        events += reader.feed(data[i : i + size])
        assert reader.buffered <= 17
    assert events == [LineTooLong(16), Command("NOOP")]


def test_huge_chunk_without_line_ending_is_dropped():
    reader = CommandReader(max_line=16)
    assert reader.feed(b"x" * 100_000) == []
    assert reader.buffered == 0
    assert reader.feed(b"more junk") == []
    assert reader.buffered == 0
    assert reader.feed(b"\r\nPWD\r\n") == [LineTooLong(16), Command("PWD")]


def test_cr_right_at_the_limit_then_lf_in_next_chunk():
    reader = CommandReader(max_line=16)
    assert reader.feed(b"STOR " + b"x" * 11 + b"\r") == []
    assert reader.buffered == 17
    assert reader.feed(b"\n") == [Command("STOR", "x" * 11)]


# --- Telnet ------------------------------------------------------------------------------------------------


def test_iac_ip_and_iac_dm_before_abor_are_dropped():
    # What a client sends for an abort (RFC 959 §4.1.3): IAC IP, then the Synch (IAC DM), then ABOR.
    assert read(bytes([IAC, IP, IAC, DM]) + b"ABOR\r\n") == [Command("ABOR")]


@pytest.mark.parametrize("wire", [
    bytes([IAC, IP, IAC, DM]) + b"ABOR\r\n",  # the urgent byte delivered in line (SO_OOBINLINE)
    bytes([IAC, IP, DM]) + b"ABOR\r\n",  # tnftp, inetutils-ftp: "IAC IP IAC" urgent, the last IAC out of band
    bytes([IAC, IP, IAC]) + b"ABOR\r\n",  # ncftp: "IAC DM" urgent, the DM out of band
    bytes([DM]) + b"ABOR\r\n",  # a stray DM alone
    bytes([DM, DM, IAC]) + b"abor\r\n",
])
def test_abort_in_every_shape_the_kernel_leaves_it_is_abor(wire):
    assert read(wire) == [Command("ABOR")]
    assert read_chunks([wire[i : i + 1] for i in range(len(wire))]) == [Command("ABOR")]


def test_a_dm_or_lone_iac_inside_an_argument_is_data():
    (event,) = read(b"STOR a\xf2b\r\n")
    assert event.arg.encode("utf-8", "surrogateescape") == b"a\xf2b"
    (event,) = read(b"STOR caf\xff\xe9\r\n")  # an undoubled 0xFF before a byte that is no Telnet command
    assert event.arg.encode("utf-8", "surrogateescape") == b"caf\xff\xe9"


def test_a_lone_iac_before_the_line_end_does_not_swallow_it():
    events = read(b"NOOP\xff\nNOOP\r\n")
    assert events == [BadLine("command verb is not ASCII", b"NOOP\xff"), Command("NOOP")]


def test_dm_is_not_a_verb_letter_elsewhere():
    assert read(b"AB\xf2OR\r\n") == [BadLine("command verb is not ASCII", b"AB\xf2OR")]
    assert read(bytes([DM]) + b"\r\n") == [BadLine("empty command line", b"")]


@pytest.mark.parametrize("verb", [WILL, WONT, DO, DONT])
def test_option_negotiation_consumes_its_option_byte(verb):
    # The option byte is a letter here: were it not consumed, the verb would become "XNOOP".
    assert read(bytes([IAC, verb]) + b"XNOOP\r\n") == [Command("NOOP")]


def test_iac_iac_is_a_literal_ff_byte():
    (event,) = read(b"STOR a\xff\xffb\r\n")
    assert event == Command("STOR", "a\udcffb")
    assert event.arg.encode("utf-8", "surrogateescape") == b"a\xffb"


@pytest.mark.parametrize(
    "chunks",
    [
        [b"\xff", b"\xf4", b"ABOR\r\n"],
        [b"\xff", b"\xfbX", b"NOOP\r\n"],
        [b"\xff\xfb", b"X", b"NOOP\r\n"],
        [b"STOR a\xff", b"\xffb\r\n"],
    ],
)
def test_telnet_sequences_split_across_feeds(chunks):
    assert read_chunks(chunks) == read(b"".join(chunks))
    assert len(read(b"".join(chunks))) == 1
    assert isinstance(read(b"".join(chunks))[0], Command)


def test_telnet_inside_a_line_does_not_break_it():
    assert read(b"RE\xff\xf4TR f\xff\xfb\x01ile\r\n") == [Command("RETR", "file")]


def test_byte_at_a_time_gives_the_same_events_as_one_feed():
    data = (
        b"USER bob\r\nPASS x\n\xff\xf4\xff\xf2ABOR\r\n\r\n123\r\n"
        b"STOR " + b"z" * 40 + b"\r\nSTOR \xe6\x97\xa5\xff\xff\r\nQUIT\r\n"
    )
    whole = read(data, max_line=32)
    assert read_chunks([data[i : i + 1] for i in range(len(data))], max_line=32) == whole
    assert [type(e).__name__ for e in whole] == [
        "Command", "Command", "Command", "BadLine", "BadLine", "LineTooLong", "Command", "Command",
    ]  # fmt: skip


# --- encodings ---------------------------------------------------------------------------------------------


def test_utf8_japanese_argument_round_trips_byte_exact():
    name = "日本語のファイル 名.txt"
    line = b"STOR " + name.encode("utf-8") + b"\r\n"
    (event,) = read(line)
    assert event == Command("STOR", name)
    assert event.to_bytes() == line


def test_shift_jis_argument_round_trips_through_surrogateescape():
    raw = "日本語のファイル.txt".encode("shift_jis")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # the point of the test: these bytes are not UTF-8
    line = b"RETR " + raw + b"\r\n"
    (event,) = read(line)
    assert event.verb == "RETR"
    assert event.arg.encode("utf-8", "surrogateescape") == raw
    assert event.to_bytes() == line


def test_ff_byte_in_a_name_travels_as_iac_iac_and_comes_back():
    # A Latin-1 name: its \xff byte must be doubled on the wire.
    arg = b"caf\xe9\xff".decode("utf-8", "surrogateescape")
    wire = format_command("STOR", arg)
    assert wire == b"STOR caf\xe9\xff\xff\r\n"
    assert read(wire) == [Command("STOR", arg)]


# --- formatting --------------------------------------------------------------------------------------------


def test_format_command():
    assert format_command("USER", "anonymous") == b"USER anonymous\r\n"
    assert format_command("noop") == b"NOOP\r\n"
    assert format_command("STOR", " spaced name ") == b"STOR  spaced name \r\n"
    assert format_command("NOOP", "") == b"NOOP \r\n"


@pytest.mark.parametrize("arg", ["a\r\nDELE b", "a\nDELE b", "a\rb", "\n", "x\r"])
def test_format_command_refuses_cr_lf_injection(arg):
    with pytest.raises(CommandError):
        format_command("RETR", arg)


@pytest.mark.parametrize("verb", ["", "US R", "3USR", "ABCDEFGHI", "ÜSER", "NOOP\r\n", "X-1"])
def test_format_command_refuses_invalid_verbs(verb):
    with pytest.raises(CommandError):
        format_command(verb, "x")


def test_format_command_refuses_what_cannot_be_encoded():
    with pytest.raises(CommandError):
        format_command("STOR", "\ud800")  # a lone surrogate that surrogateescape cannot map to a byte
    with pytest.raises(CommandError):
        format_command("STOR", "日本", encoding="ascii")
    with pytest.raises(CommandError):
        format_command("STOR", "x", encoding="no-such-codec")


def test_command_error_is_a_protocol_error():
    assert issubclass(CommandError, ProtocolError)


def test_command_str_masked_and_to_bytes():
    assert str(Command("RETR", "a b")) == "RETR a b"
    assert str(Command("PWD")) == "PWD"
    assert Command("PASS", "hunter2").masked() == "PASS ****"
    assert Command("ACCT", "acct").masked() == "ACCT ****"
    assert Command("PASS").masked() == "PASS"
    assert Command("USER", "bob").masked() == "USER bob"
    assert Command("RETR", "x").to_bytes() == b"RETR x\r\n"


# --- properties --------------------------------------------------------------------------------------------

# Bytes that matter to the reader, mixed with ordinary ones, so that random data reaches every branch.
_interesting = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b"\xff", bytes([IP]), bytes([DM]), bytes([WILL]), bytes([DONT]), b" ", b"A", b"noop", b"1"]
)
_wire = st.one_of(st.binary(max_size=300), st.lists(_interesting, max_size=120).map(b"".join))


@settings(max_examples=300)
@given(data=_wire, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=40))
def test_any_chunking_gives_the_same_events_and_never_raises(data, cuts):
    whole = read(data, max_line=16)
    reader = CommandReader(max_line=16)
    chunked = []
    for chunk in split_at(data, cuts):
        chunked += reader.feed(chunk)
        assert reader.buffered <= 17
    assert chunked == whole
    assert all(isinstance(e, Command | BadLine | LineTooLong) for e in whole)
    # Every LF ends exactly one line (an event) once Telnet sequences are gone.
    assert len(whole) <= data.count(b"\n")


@given(data=_wire)
def test_byte_at_a_time_equals_one_feed(data):
    assert read_chunks([data[i : i + 1] for i in range(len(data))]) == read(data)


_verbs = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)


@given(verb=_verbs, raw_arg=st.binary(max_size=200).filter(lambda b: b"\r" not in b and b"\n" not in b))
def test_format_then_read_is_identity_for_any_argument_bytes(verb, raw_arg):
    arg = raw_arg.decode("utf-8", "surrogateescape")
    wire = format_command(verb, arg)
    assert read(wire) == [Command(verb.upper(), arg)]
    assert wire.endswith(b"\r\n")
    assert wire.count(b"\n") == 1


@given(
    verb=_verbs,
    arg=st.one_of(st.none(), st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"))),
)
def test_format_then_read_is_identity_for_text(verb, arg):
    assert read(format_command(verb, arg)) == [Command(verb.upper(), arg)]
