"""The codecs for changing facts: RFC 3659 time-vals (strict), MFMT and MFF arguments and replies, SITE CHMOD modes,
AVBL replies; every error one line naming what is accepted."""

from __future__ import annotations

import calendar

import pytest

from ftpkit.protocol.errors import CommandError, ReplyError
from ftpkit.protocol.modify import (
    format_mff_feature,
    format_mff_reply,
    format_mfmt_reply,
    format_mode,
    format_time_val,
    parse_avbl_reply,
    parse_mff,
    parse_mfmt,
    parse_mfmt_reply,
    parse_mode,
    parse_time_val,
)
from ftpkit.protocol.replies import Reply


@pytest.mark.parametrize(("text", "want"), [
    ("20200102030405", calendar.timegm((2020, 1, 2, 3, 4, 5))),
    ("19700101000000", 0),
    ("20240229235959", calendar.timegm((2024, 2, 29, 23, 59, 59))),
    ("20161231235960", calendar.timegm((2017, 1, 1, 0, 0, 0))),  # a leap second
    ("20200102030405.5", calendar.timegm((2020, 1, 2, 3, 4, 5)) + 0.5),
    ("20200102030405.123", calendar.timegm((2020, 1, 2, 3, 4, 5)) + 0.123),
    ("19691231235959", -1),
])
def test_time_vals(text: str, want: float) -> None:
    assert parse_time_val(text) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("text", ["", "2020", "2020010203040", "202001020304050", "20201302030405", "20200002030405",
                                  "20200230000000", "20230229000000", "20200102240000", "20200102236000",
                                  "20200102030461", "2020-01-02T03:04:05", "20200102030405.", "20200102030405.x",
                                  "20200102030405.1234567890", "00000101000000", "+2020010203040"])
def test_bad_time_vals_name_the_format(text: str) -> None:
    with pytest.raises(CommandError, match=r"YYYYMMDDHHMMSS\[\.sss\] \(UTC\)"):
        parse_time_val(text)


def test_format_time_val() -> None:
    assert format_time_val(calendar.timegm((2020, 1, 2, 3, 4, 5))) == "20200102030405"
    assert format_time_val(calendar.timegm((2020, 1, 2, 3, 4, 5)) + 0.1234, 3) == "20200102030405.123"
    assert format_time_val(calendar.timegm((2020, 1, 2, 3, 4, 5)) + 0.9999, 3) == "20200102030405.999"
    assert format_time_val(-1) == "19691231235959"


def test_mfmt_argument_and_reply() -> None:
    assert parse_mfmt("20200102030405 dir/a b.txt") == ("20200102030405", 1577934245, "dir/a b.txt")
    assert format_mfmt_reply("20200102030405", "dir/a b.txt") == "Modify=20200102030405; dir/a b.txt"
    for arg in (None, "", "20200102030405", "20200102030405 ", " x"):
        with pytest.raises(CommandError, match=r"MFMT YYYYMMDDHHMMSS\[\.sss\] path"):
            parse_mfmt(arg)
    assert parse_mfmt_reply(Reply(213, ("Modify=20200102030405; a.txt",))) == 1577934245
    assert parse_mfmt_reply(Reply(213, ("Modify=20200102030405; /a.txt.",))) == 1577934245  # pyftpdlib's dot
    assert parse_mfmt_reply(Reply(213, ("modify=20200102030405.5; a",))) == 1577934245.5
    assert parse_mfmt_reply(Reply(213, ("UTIME OK",))) is None  # pure-ftpd: set, but it does not say to what
    for reply in (Reply(550, ("a: No such file",)), Reply(200, ("OK",)), Reply(213, ("Modify=2020; a",))):
        with pytest.raises(ReplyError):
            parse_mfmt_reply(reply)


def test_mff_argument_and_reply() -> None:
    facts, path = parse_mff("Modify=20200102030405;UNIX.mode=0644; a b.txt")
    assert (facts, path) == ([("Modify", "20200102030405"), ("UNIX.mode", "0644")], "a b.txt")
    assert parse_mff("modify=20200102030405 x") == ([("modify", "20200102030405")], "x")  # no trailing ;
    assert format_mff_reply(facts, path) == "Modify=20200102030405;UNIX.mode=0644; a b.txt"
    assert format_mff_feature() == "modify;UNIX.mode;"
    for arg, words in (("modify=1;", "MFF fact=value; path"), ("; x", "at least one fact"),
                       ("modify; x", "is not name=value"), ("=1; x", "is not name=value"),
                       ("modify=1;MODIFY=2; x", "given twice")):
        with pytest.raises(CommandError, match=words):
            parse_mff(arg)


@pytest.mark.parametrize(("text", "mode"), [("644", 0o644), ("0644", 0o644), ("7", 0o7), ("00", 0), ("777", 0o777),
                                            ("0755", 0o755)])
def test_modes(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["", "8", "888", "4755", "1777", "07777", "-644", "0x1ff", "rwx", "6444"])
def test_bad_modes_name_what_is_accepted(text: str) -> None:
    with pytest.raises(CommandError, match="octal mode 000-777"):
        parse_mode(text)


def test_format_mode() -> None:
    assert format_mode(0o644) == "0644" and format_mode(0) == "0000"


def test_avbl_reply() -> None:
    assert parse_avbl_reply(Reply(213, ("64869158912",))) == 64869158912
    for reply in (Reply(550, ("no",)), Reply(213, ("lots",)), Reply(202, ("1",))):
        with pytest.raises(ReplyError, match="AVBL"):
            parse_avbl_reply(reply)
