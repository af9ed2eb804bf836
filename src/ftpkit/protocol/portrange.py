"""Port ranges (``LOW-HIGH``): the server's passive ports, the client's active ports. One parser, one error text."""

from __future__ import annotations

import re
from typing import Any

from ftpkit.protocol.errors import ProtocolError

_RANGE = re.compile(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", re.ASCII)


class PortRangeError(ProtocolError):
    """A port range that is not ``low-high`` within the limits; ``str()`` says what is allowed (no field name)."""


def parse_port_range(value: Any, low_limit: int = 1024, high_limit: int = 65535) -> tuple[int, int]:
    """``"50000-50100"`` (or a pair such as ``(50000, 50100)`` or TOML's ``[50000, 50100]``) to ``(low, high)``.

    Raises :class:`PortRangeError`: ``'50100-50000' is not low-high within 1024-65535``.
    """
    pair = isinstance(value, list | tuple) and len(value) == 2
    text = f"{value[0]}-{value[1]}" if pair else str(value).strip()
    match = _RANGE.fullmatch(text)
    if match is not None:
        low, high = int(match.group(1)), int(match.group(2))
        if low_limit <= low <= high <= high_limit:
            return low, high
    raise PortRangeError(f"{text!r} is not low-high within {low_limit}-{high_limit}")
