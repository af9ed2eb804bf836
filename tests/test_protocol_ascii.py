"""TYPE A line-ending conversion: ToNetwork (downloads) and FromNetwork (uploads)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftpkit.protocol.ascii import FromNetwork, ToNetwork


def to_network(chunks: list[bytes]) -> bytes:
    conv = ToNetwork()
    return b"".join(conv.convert(c) for c in chunks)


def from_network(chunks: list[bytes]) -> bytes:
    conv = FromNetwork()
    return b"".join(conv.convert(c) for c in chunks) + conv.flush()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def reference_to_network(data: bytes) -> bytes:
    """The rule, written independently: every LF not already preceded by CR gets one."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


# --- ToNetwork ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "wire"),
    [
        (b"", b""),
        (b"no newline", b"no newline"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"\n\n", b"\r\n\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),  # a CRLF file is not doubled
        (b"a\rb", b"a\rb"),  # a lone CR is kept
        (b"a\r\r\n", b"a\r\r\n"),
        (b"mixed\r\nand\n", b"mixed\r\nand\r\n"),
    ],
)
def test_to_network(local, wire):
    assert to_network([local]) == wire


def test_to_network_crlf_split_between_chunks_is_not_doubled():
    assert to_network([b"a\r", b"\nb"]) == b"a\r\nb"


def test_to_network_lf_chunk_after_a_split_crlf():
    # The LF that completes a split CRLF is the last byte seen: a following bare LF still needs its CR.
    assert to_network([b"a\r", b"\n", b"\n"]) == b"a\r\n\r\n"
    assert to_network([b"\r", b"\n", b"x\n"]) == b"\r\nx\r\n"


def test_to_network_cr_then_other_byte_in_next_chunk():
    assert to_network([b"a\r", b"b\n"]) == b"a\rb\r\n"


def test_to_network_empty_chunk_keeps_the_held_state():
    assert to_network([b"a\r", b"", b"\n"]) == b"a\r\n"


# --- FromNetwork -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "local"),
    [
        (b"", b""),
        (b"a\r\nb\r\n", b"a\nb\n"),
        (b"a\rb", b"a\rb"),  # a lone CR is kept
        (b"a\nb", b"a\nb"),  # so is a bare LF
        (b"\r\r\n", b"\r\n"),
        (b"x\r", b"x\r"),  # a final CR comes out of flush()
    ],
)
def test_from_network(wire, local):
    assert from_network([wire]) == local


def test_from_network_holds_a_cr_at_the_end_of_a_chunk():
    conv = FromNetwork()
    assert conv.convert(b"line\r") == b"line"
    assert conv.convert(b"\nnext") == b"\nnext"
    assert conv.flush() == b""


def test_from_network_held_cr_followed_by_other_byte_is_kept():
    conv = FromNetwork()
    assert conv.convert(b"a\r") == b"a"
    assert conv.convert(b"b") == b"\rb"


def test_from_network_flush_returns_the_held_cr_once():
    conv = FromNetwork()
    assert conv.convert(b"end\r") == b"end"
    assert conv.convert(b"") == b""  # still held
    assert conv.flush() == b"\r"
    assert conv.flush() == b""


def test_from_network_cr_chunks_one_by_one():
    assert from_network([b"\r", b"\r", b"\n", b"\r"]) == b"\r\n\r"


# --- properties --------------------------------------------------------------------------------------------

_text = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\xff"]), max_size=80).map(b"".join),
)
_cuts = st.lists(st.integers(min_value=0, max_value=300), max_size=30)


@given(data=_text, cuts=_cuts)
def test_to_network_chunking_does_not_matter(data, cuts):
    whole = to_network([data])
    assert whole == reference_to_network(data)
    assert to_network(split_at(data, cuts)) == whole
    assert to_network([data[i : i + 1] for i in range(len(data))]) == whole


@given(data=_text, cuts=_cuts)
def test_from_network_chunking_does_not_matter(data, cuts):
    whole = from_network([data])
    assert whole == data.replace(b"\r\n", b"\n")
    assert from_network(split_at(data, cuts)) == whole
    assert from_network([data[i : i + 1] for i in range(len(data))]) == whole


@given(data=_text, cuts=_cuts)
def test_network_form_has_no_bare_lf(data, cuts):
    wire = to_network(split_at(data, cuts))
    assert re.search(rb"(?<!\r)\n", wire) is None
    assert wire.count(b"\n") == data.count(b"\n")


@given(data=_text.map(lambda b: b.replace(b"\r", b"")), cuts=_cuts, cuts_back=_cuts)
def test_round_trip_without_cr(data, cuts, cuts_back):
    wire = to_network(split_at(data, cuts))
    assert from_network(split_at(wire, cuts_back)) == data
