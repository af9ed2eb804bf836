"""``ftp://user:password@host:port/path`` URLs (percent-decoded), with netrc as curl and lftp read it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit


class URLError(ValueError):
    pass


@dataclass(frozen=True)
class FTPURL:
    host: str
    port: int = 21
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    path: str = ""
    scheme: str = "ftp"

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{user}{host}:{self.port}/{self.path.lstrip('/')}"

    def with_credentials(self, user: str | None, password: str | None) -> FTPURL:
        return replace(self, user=user, password=password)


def parse_url(text: str) -> FTPURL:
    if "://" not in text:
        text = "ftp://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("ftp", "ftps"):
        raise URLError(f"{text!r}: the scheme must be ftp:// (or ftps://), not {parts.scheme}://")
    if not parts.hostname:
        raise URLError(f"{text!r} has no host name")
    try:
        port = parts.port or (990 if parts.scheme == "ftps" else 21)
    except ValueError:
        raise URLError(f"{text!r}: the port is not a number from 1 to 65535") from None
    path = unquote(parts.path, errors="surrogateescape")
    # ftp://host/dir/file: the path after the first slash, relative to the login directory (RFC 1738);
    # ftp://host//abs/path is absolute.
    if path.startswith("/"):
        path = path[1:]
    return FTPURL(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        path=path,
        scheme=parts.scheme,
    )


def netrc_credentials(host: str, path: str | None = None) -> tuple[str, str] | None:
    """(login, password) for ``host`` from ~/.netrc (or ``path``), if there is an entry."""
    path = path or os.path.join(os.path.expanduser("~"), ".netrc")
    if not os.path.exists(path):
        return None
    import netrc  # with shlex: only when there is a file to read

    try:
        auth = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None
    if auth is None:
        return None
    login, _, password = auth
    return login or "anonymous", password or ""
