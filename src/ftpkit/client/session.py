"""Opening a logged-in session from a URL, and retrying transient failures with backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ftpkit.client.core import FTPClient
from ftpkit.client.errors import FTPError
from ftpkit.client.options import ClientOptions
from ftpkit.client.url import FTPURL, netrc_credentials

T = TypeVar("T")


def credentials(url: FTPURL, netrc_file: str | None = None) -> tuple[str, str]:
    """User and password: from the URL, else from netrc for the host, else anonymous."""
    if url.user is not None:
        if url.password is not None:
            return url.user, url.password
        found = netrc_credentials(url.host, netrc_file)
        if found and found[0] == url.user:
            return found
        return url.user, ""
    found = netrc_credentials(url.host, netrc_file)
    return found if found else ("anonymous", "ftpkit@")


async def open_session(url: FTPURL, options: ClientOptions, netrc_file: str | None = None) -> FTPClient:
    client = FTPClient(options)
    try:
        await client.connect(url.host, url.port)
        user, password = credentials(url, netrc_file)
        await client.login(user, password)
    except BaseException:
        await client.close()
        raise
    return client


async def with_retries(attempt: Callable[[int], Awaitable[T]], options: ClientOptions) -> T:
    """Run ``attempt(n)``; on a transient failure wait (0.5 s, 1 s, 2 s, ... up to 10 s) and try again, at most
    ``options.retries`` more times. Permanent failures (5xx replies) are raised at once."""
    tries = 0
    while True:
        try:
            return await attempt(tries)
        except FTPError as exc:
            if not exc.transient or tries >= options.retries:
                raise
            delay = min(10.0, 0.5 * 2 ** tries)
            tries += 1
            options.transcript("!!!", f"{exc}; retry {tries} of {options.retries} in {delay:g} s")
            await asyncio.sleep(delay)
