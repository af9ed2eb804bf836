"""The one port-range parser: the server's passive ports and the client's active ports."""

from __future__ import annotations

import pytest

from ftpkit.protocol.portrange import PortRangeError, parse_port_range


@pytest.mark.parametrize(("value", "expected"), [
    ("50000-50100", (50000, 50100)), (" 1024 - 65535 ", (1024, 65535)), ("2000-2000", (2000, 2000)),
    ([50000, 50100], (50000, 50100)), ((3000, 3001), (3000, 3001)),
])
def test_parses(value, expected):
    assert parse_port_range(value) == expected


@pytest.mark.parametrize(("value", "text"), [
    ("50100-50000", "50100-50000"), ("1-2", "1-2"), ("9-x", "9-x"), ("²-3", "²-3"), ("5000", "5000"),
    ("1024-65536", "1024-65536"), ((100, 200), "100-200"), ([True, 2000], "True-2000"), ("", ""),
])
def test_one_error_text(value, text):
    with pytest.raises(PortRangeError) as info:
        parse_port_range(value)
    assert str(info.value) == f"{text!r} is not low-high within 1024-65535"


def test_limits():
    assert parse_port_range("20-21", low_limit=1) == (20, 21)
    with pytest.raises(PortRangeError, match=r"^'20-21' is not low-high within 1-10$"):
        parse_port_range("20-21", low_limit=1, high_limit=10)
