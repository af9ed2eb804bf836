"""The ftpkit FTP client: an asyncio library (:class:`FTPClient`), a blocking facade (:class:`Client`), and the
operations behind the ``ftpkit get/put/ls/mirror`` commands and ``ftpkit shell``.

The names below are imported on first use (PEP 562), so that importing one submodule (the CLI imports
``ftpkit.client.errors`` first) does not load the whole client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftpkit.client.core import FTPClient
    from ftpkit.client.errors import ControlConnectionError, DataConnectionError, FTPError, LocalError, ReplyError
    from ftpkit.client.options import ClientOptions
    from ftpkit.client.sync import Client
    from ftpkit.client.url import FTPURL, URLError, parse_url

_WHERE = {
    "FTPURL": "url",
    "Client": "sync",
    "ClientOptions": "options",
    "ControlConnectionError": "errors",
    "DataConnectionError": "errors",
    "FTPClient": "core",
    "FTPError": "errors",
    "LocalError": "errors",
    "ReplyError": "errors",
    "URLError": "url",
    "parse_url": "url",
}

__all__ = [
    "FTPURL",
    "Client",
    "ClientOptions",
    "ControlConnectionError",
    "DataConnectionError",
    "FTPClient",
    "FTPError",
    "LocalError",
    "ReplyError",
    "URLError",
    "parse_url",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
