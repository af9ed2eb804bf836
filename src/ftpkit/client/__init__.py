"""The ftpkit FTP client: an asyncio library (:class:`FTPClient`), a blocking facade (:class:`Client`), and the
operations behind the ``ftpkit get/put/ls/mirror`` commands and ``ftpkit shell``."""

from ftpkit.client.core import FTPClient
from ftpkit.client.errors import ControlConnectionError, DataConnectionError, FTPError, LocalError, ReplyError
from ftpkit.client.options import ClientOptions
from ftpkit.client.sync import Client
from ftpkit.client.url import FTPURL, URLError, parse_url

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
