"""``--verify``: after a transfer, the server's digest of the file against this machine's (the best algorithm both
sides have: HASH, else XSHA256/XSHA512/XSHA1/XMD5/XCRC), or the sizes when the server gives no digests, which is
said once per run. A difference is a :class:`VerifyError` naming both digests (or both sizes)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from ftpkit.client.core import FTPClient
from ftpkit.client.errors import FTPError, ReplyError, VerifyError
from ftpkit.client.options import Transcript
from ftpkit.protocol.hashes import Hasher, new_hash

CHUNK = 1 << 20

LocalDigest = Callable[[str], Awaitable[str]]
"""The digest of this machine's copy with a given algorithm."""


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """A local file's digest, read in 1 MiB chunks into one buffer (flat memory); blocking (call in a thread)."""
    hasher = new_hash(algorithm)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while count := fh.readinto(view):
            hasher.update(view[:count])
    return hasher.hexdigest()


def local_file(path: Path) -> LocalDigest:
    async def digest(algorithm: str) -> str:
        return await asyncio.to_thread(file_digest, path, algorithm)

    return digest


class StreamDigest:
    """Hashes bytes as they pass (a download to standard output), for the algorithm chosen before the transfer."""

    def __init__(self, algorithm: str | None) -> None:
        self.algorithm = algorithm
        self.hasher: Hasher | None = new_hash(algorithm) if algorithm else None
        self.size = 0

    def wrap(self, sink: Callable[[bytes], object]) -> Callable[[bytes], object]:
        def write(data: bytes) -> object:
            self.size += len(data)
            if self.hasher is not None:
                self.hasher.update(data)
            return sink(data)

        return write

    async def digest(self, algorithm: str) -> str:
        if self.hasher is None or algorithm != self.algorithm:
            raise FTPError(f"--verify: the server answered with {algorithm}, not {self.algorithm} as it offered")
        return self.hasher.hexdigest()


class Verifier:
    """Checks transferred files; shared by every session of a run, so "no digests here" is said once."""

    def __init__(self, transcript: Transcript) -> None:
        self.transcript = transcript
        self._said: set[str] = set()

    def _once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.transcript("!!!", text)

    async def algorithm(self, ftp: FTPClient) -> str | None:
        """The algorithm digests will use on this server, or ``None`` (sizes only; said once)."""
        method = await ftp.hash_method()
        if method is None:
            self._once("none", f"--verify: {ftp.control.host} offers no HASH (nor XSHA256, XSHA1, XMD5, XCRC): "
                               "comparing sizes only")
            return None
        return method.algorithm

    async def check(self, ftp: FTPClient, remote: str, local_name: str, size: int, digest: LocalDigest) -> None:
        """Compare the server's ``remote`` with the local copy (``size`` bytes, its ``digest``); raise
        :class:`VerifyError` when they differ."""
        if await self.algorithm(ftp) is not None:
            try:
                result = await ftp.remote_hash(remote)
            except ReplyError as exc:  # refused for this file (too large for the server, busy, turned off)
                self.transcript("!!!", f"--verify: {exc.summary()}; comparing sizes for {remote}")
            else:
                try:
                    mine = await digest(result.algorithm)
                except ValueError:
                    raise FTPError(f"--verify: the server answered with {result.algorithm}, which ftpkit cannot "
                                   "compute") from None
                if mine != result.digest:
                    raise VerifyError(f"--verify: {local_name} differs from {remote} on the server: {result.algorithm}"
                                      f" here {mine}, on the server {result.digest}")
                self.transcript("===", f"verified {remote}: {result.algorithm} {mine}")
                return
        theirs = await ftp.size(remote)
        if theirs != size:
            raise VerifyError(f"--verify: {local_name} differs from {remote} on the server: {size} bytes here, "
                              f"{theirs} on the server")
        self.transcript("===", f"verified {remote}: {size} bytes (sizes only)")
