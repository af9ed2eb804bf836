"""FEAT (RFC 2389): the extensions a server lists, and how a client reads the list.

A server with extensions answers FEAT with a multi-line 211 reply whose lines between the first and the last name
one feature each, after a space: the feature's name (case-insensitive), then, after a space, its parameters::

    211-Features:
     AUTH TLS
     MLST type*;size*;modify*;
     REST STREAM
     UTF8
    211 End

A server without extensions may answer with one line (``211 No features``); a server without FEAT answers 500 or
502. Both mean: no features.

Read as a mapping from the upper-case name to the parameter text (``{"AUTH": "TLS", "MLST": "type*;size*;modify*;",
"REST": "STREAM", "UTF8": ""}``). The reader tolerates what real servers send besides: feature lines without the
leading space, lower-case names, the ``211-`` code repeated on every line, blank lines. A name listed on several
lines (``AUTH TLS`` and ``AUTH SSL``, as vsftpd does) keeps every line's parameters, joined by ``;`` into one list
(``"TLS;SSL"``), as lftp reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ftpkit.protocol.errors import ReplyError
from ftpkit.protocol.replies import Reply

_NAME = re.compile(r"[!-~]+")  # printable ASCII without the space (RFC 2389: feature labels are VCHARs)


def parse_features(reply: Reply) -> dict[str, str]:
    """The features of a FEAT reply: {upper-case name: parameters}; empty unless the reply is a multi-line 211."""
    features: dict[str, str] = {}
    if reply.code != 211:
        return features
    for line in reply.lines[1:-1]:
        text = line.strip()
        if text.startswith("211-"):
            text = text[4:].lstrip()
        name, _, params = text.partition(" ")
        if not name:
            continue
        name, params = name.upper(), params.strip()
        before = features.get(name)
        if not before or not params:
            features[name] = before or params
        else:
            features[name] = before + params if before.endswith(";") else f"{before};{params}"
    return features


def format_features(features: Mapping[str, str] | Iterable[tuple[str, str]]) -> Reply:
    """The 211 reply that lists ``features`` in the order given ((name, parameters) pairs or a mapping); a name
    may come more than once (``("AUTH", "TLS"), ("AUTH", "SSL")``). No features: the one-line 211."""
    items = list(features.items() if isinstance(features, Mapping) else features)
    if not items:
        return Reply(211, ("No features.",))
    lines = ["Features:"]
    for name, params in items:
        if not _NAME.fullmatch(name):
            raise ReplyError(f"feature name {name!r} must be printable ASCII without spaces")
        if "\r" in params or "\n" in params:
            raise ReplyError(f"parameters of feature {name} may not contain CR or LF")
        lines.append(f" {name.upper()} {params}" if params else f" {name.upper()}")
    lines.append("End")
    return Reply(211, tuple(lines))
