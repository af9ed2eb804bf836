"""Directory listings: ls -l lines, MLSx times and facts."""

from __future__ import annotations

import calendar
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftpkit.protocol.listing import (
    MLST_FACTS,
    SIX_MONTHS,
    Facts,
    format_facts,
    format_ls_line,
    format_mlst_feature,
    format_mlst_opts_reply,
    ls_time,
    mlst_time,
    mlst_type,
    parse_facts,
    parse_mlst_opts,
    parse_mlst_time,
)

NOW = calendar.timegm((2025, 11, 21, 5, 28, 0))
RECENT = calendar.timegm((2025, 11, 20, 23, 7, 0))
OLD = calendar.timegm((2024, 3, 5, 14, 0, 0))

FILE = Facts("notes.txt", stat.S_IFREG | 0o644, 1234, RECENT)
DIR = Facts("pub", stat.S_IFDIR | 0o755, 4096, OLD, nlink=2)


# --- ls -l -------------------------------------------------------------------------------------------------


def test_ls_line_for_a_recent_file():
    expected = "-rw-r--r--    1 ftp      ftp              1234 Nov 20 23:07 notes.txt"
    assert format_ls_line(FILE, NOW) == expected


def test_ls_line_for_an_old_directory():
    assert format_ls_line(DIR, NOW) == "drwxr-xr-x    2 ftp      ftp              4096 Mar  5  2024 pub"


def test_ls_line_for_a_symlink_and_other_owner():
    link = Facts("latest", stat.S_IFLNK | 0o777, 9, RECENT, owner="alice", group="staff")
    assert format_ls_line(link, NOW, link_target="v1.2") == (
        "lrwxrwxrwx    1 alice    staff               9 Nov 20 23:07 latest -> v1.2"
    )


def test_ls_time_six_month_boundary():
    assert ls_time(NOW - SIX_MONTHS + 1, NOW) == "May 23 05:28"
    assert ls_time(NOW - SIX_MONTHS + 60, NOW) == "May 23 05:29"
    assert ls_time(NOW - SIX_MONTHS, NOW) == "May 23  2025"
    assert ls_time(NOW + SIX_MONTHS + 60, NOW) == "May 22  2026"  # far in the future: the year, too


def test_ls_time_pads_single_digit_days():
    assert ls_time(calendar.timegm((2025, 11, 1, 9, 5, 0)), NOW) == "Nov  1 09:05"


@pytest.mark.parametrize("name", ["my file.txt", "two  spaces", "日本語のファイル.txt", "名前 with space"])
def test_ls_line_name_with_spaces_and_japanese_is_the_ninth_field(name):
    line = format_ls_line(Facts(name, stat.S_IFREG | 0o600, 5, OLD), NOW)
    assert line.endswith(" " + name)
    assert line.split(None, 8)[8] == name  # how lftp, ncftp and FileZilla find the name


def test_ls_line_large_file_keeps_the_columns():
    line = format_ls_line(Facts("big.iso", stat.S_IFREG | 0o644, 123_456_789_012, RECENT), NOW)
    assert line.split()[4] == "123456789012"


# --- MLSx times --------------------------------------------------------------------------------------------


def test_mlst_time():
    assert mlst_time(0) == "19700101000000"
    assert mlst_time(NOW) == "20251121052800"
    assert mlst_time(RECENT + 0.999) == "20251120230700"  # whole seconds, truncated


def test_parse_mlst_time():
    assert parse_mlst_time("19700101000000") == 0
    assert parse_mlst_time("20251121052800") == NOW
    assert parse_mlst_time("20251121052800.5") == NOW + 0.5
    assert parse_mlst_time("20251121052800.125") == NOW + 0.125


@pytest.mark.parametrize(
    "text", ["", "2025", "2025112105280", "202511210528000", "2025112105280x", "20251321000000"]
)
def test_parse_mlst_time_refuses(text):
    with pytest.raises(ValueError):
        parse_mlst_time(text)


@given(st.integers(min_value=0, max_value=calendar.timegm((9999, 12, 31, 23, 59, 59))))
def test_mlst_time_round_trip(seconds):
    text = mlst_time(seconds)
    assert len(text) == 14
    assert parse_mlst_time(text) == seconds


# --- MLSx facts --------------------------------------------------------------------------------------------


def test_format_facts_for_a_file():
    facts = Facts("notes.txt", stat.S_IFREG | 0o644, 1234, NOW, unique="803U1a2b")
    assert format_facts(facts, "rawd") == (
        "type=file;size=1234;modify=20251121052800;perm=rawd;unique=803U1a2b; notes.txt"
    )


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (stat.S_IFDIR | 0o755, "dir"),
        (stat.S_IFREG | 0o644, "file"),
        (stat.S_IFLNK | 0o777, "OS.unix=symlink"),
        (stat.S_IFIFO | 0o644, "OS.unix=special"),
        (stat.S_IFCHR | 0o644, "OS.unix=special"),
    ],
)
def test_mlst_type(mode, kind):
    assert mlst_type(Facts("x", mode, 0, 0)) == kind


def test_format_facts_leaves_out_empty_facts_but_keeps_size_zero():
    empty = Facts("empty", stat.S_IFREG | 0o644, 0, 0)
    assert format_facts(empty, "") == "type=file;size=0;modify=19700101000000; empty"


def test_format_facts_follows_the_enabled_order_and_ignores_unknown_facts():
    assert format_facts(FILE, "r", enabled=("perm", "type", "charset")) == "perm=r;type=file; notes.txt"
    assert format_facts(FILE, "r", enabled=()) == " notes.txt"


def test_default_facts():
    assert MLST_FACTS == ("type", "size", "modify", "perm", "unique")


def test_opts_mlst_codec():
    assert parse_mlst_opts("Size;TYPE;charset;") == ("type", "size")  # our order, case-insensitive, unknown ignored
    assert parse_mlst_opts("modify;perm") == ("modify", "perm")  # the last ";" may be missing
    assert parse_mlst_opts("") == ()
    assert format_mlst_opts_reply(("type", "size")) == "MLST OPTS type;size;"
    assert format_mlst_opts_reply(()) == "MLST OPTS"
    assert format_mlst_feature(MLST_FACTS) == "MLST type*;size*;modify*;perm*;unique*;"
    assert format_mlst_feature(("size",)) == "MLST type;size*;modify;perm;unique;"


def test_parse_facts():
    assert parse_facts("type=file;size=1234;modify=20251121052800;perm=rw; notes.txt") == (
        {"type": "file", "size": "1234", "modify": "20251121052800", "perm": "rw"},
        "notes.txt",
    )


def test_parse_facts_lower_cases_fact_names_not_values():
    facts, name = parse_facts("Type=OS.unix=symlink;SIZE=3; Link")
    assert (facts, name) == ({"type": "OS.unix=symlink", "size": "3"}, "Link")


@pytest.mark.parametrize(
    "name", ["my file.txt", " leading space", "trailing ", "日本語のファイル.txt", "a;b=c"]
)
def test_parse_facts_keeps_the_name_verbatim(name):
    facts, parsed = parse_facts(format_facts(Facts(name, stat.S_IFREG | 0o644, 7, NOW), "r"))
    assert parsed == name
    assert facts["size"] == "7"


@pytest.mark.parametrize("line", ["type=file;size=3;name", "type=file;size;x name", ""])
def test_parse_facts_refuses(line):
    with pytest.raises(ValueError):
        parse_facts(line)


_names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), min_size=1, max_size=40)


@given(
    name=_names,
    mode=st.sampled_from([stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777]),
    size=st.integers(min_value=0, max_value=2**63),
    mtime=st.integers(min_value=0, max_value=4_102_444_800),
    perm=st.text(alphabet="acdeflmprw", max_size=10),
    unique=st.text(alphabet="0123456789abcdefU", max_size=16),
)
def test_facts_round_trip(name, mode, size, mtime, perm, unique):
    facts = Facts(name, mode, size, mtime, unique=unique)
    parsed, parsed_name = parse_facts(format_facts(facts, perm))
    assert parsed_name == name
    assert parsed["type"] == mlst_type(facts)
    assert int(parsed["size"]) == size
    assert parse_mlst_time(parsed["modify"]) == mtime
    assert parsed.get("perm", "") == perm
    assert parsed.get("unique", "") == unique
