"""The pathname in a 257 reply (PWD, MKD; RFC 959 appendix II): in double quotes, a quote inside doubled.

``257 "/dir ""with"" quotes" created`` names ``/dir "with" quotes``; the text after the closing quote (and a space)
is a comment. The reader takes the first quote of the text as the opening one (a few servers put words before it)
and the first quote that is neither doubled nor followed by anything but a space or the end as the closing one: a
lone quote inside the name is kept, so ``257 "/a"b" is your current location`` from a server that does not double
quotes (pure-ftpd) still names ``/a"b``. Such a server's ``"/say "hi" there"`` stays ambiguous (it reads ``/say
"hi``); every reply that doubles its quotes reads exactly.
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
        after = text[end + 1:end + 2]
        if not after or after.isspace():
            return "".join(parts)
        parts.append('"')
        pos = end + 2 if after == '"' else end + 1
