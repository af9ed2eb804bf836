"""The pathname in a 257 reply (PWD, MKD; RFC 959 appendix II): in double quotes, a quote inside doubled.

``257 "/dir ""with"" quotes" created`` names ``/dir "with" quotes``; the text after the closing quote is a
comment. The reader takes the first quote of the text as the opening one (a few servers put words before it) and
the first quote that is not doubled as the closing one.
"""

from __future__ import annotations

from ftpkit.protocol.errors import ReplyError


def format_257_path(path: str) -> str:
    """``/a"b`` -> ``"/a""b"``: the quoted pathname that starts a 257 reply's text."""
    return '"' + path.replace('"', '""') + '"'


def parse_257_path(text: str) -> str:
    """The pathname a 257 reply's text names; :class:`ReplyError` when the text has no quoted pathname."""
    start = text.find('"')
    if start < 0:
        raise ReplyError(f"257 reply without a quoted pathname: {text[:80]!r}")
    parts: list[str] = []
    pos = start + 1
    while True:
        end = text.find('"', pos)
        if end < 0:
            raise ReplyError(f"257 reply whose pathname has no closing quote: {text[:80]!r}")
        parts.append(text[pos:end])
        if text[end + 1:end + 2] != '"':
            return "".join(parts)
        parts.append('"')
        pos = end + 2
