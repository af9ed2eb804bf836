"""A small blocking facade for scripts: the asyncio client on an event loop in a thread of its own.

    with Client(ClientOptions(passive=False)) as ftp:
        ftp.connect("127.0.0.1", 2121)
        ftp.login("alice", "secret")
        ftp.download("remote.bin", "local.bin")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from ftpkit.client.core import FTPClient
from ftpkit.client.options import ClientOptions


class Client:
    """Every public coroutine method of :class:`FTPClient` as a blocking method of the same name."""

    def __init__(self, options: ClientOptions | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ftpkit-client", daemon=True)
        self._thread.start()
        self.ftp = self._call(self._make, options)

    @staticmethod
    async def _make(options: ClientOptions | None) -> FTPClient:
        return FTPClient(options)

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(func(*args, **kwargs), self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        attr = getattr(self.ftp, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: self._call(attr, *args, **kwargs)

    def close(self) -> None:
        if self._loop.is_running():
            try:
                self._call(self.ftp.quit) if self.ftp.control.writer is not None else None
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5)
                self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
