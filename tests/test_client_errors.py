"""The client's data connection errors say whether the connection was open, and --fallback follows that: a
connection that never opened is retried in the other mode, one that opened and then broke is not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ftpkit.client.core import FTPClient
from ftpkit.client.errors import DataConnectionError
from ftpkit.client.options import ClientOptions
from ftpkit.server.storage import LocalStorage, StorageError, Upload


class FullUpload:
    """An upload onto a full disk: every write fails as ENOSPC would (552)."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        raise StorageError("storage full", 552)

    async def commit(self) -> None:
        await self.upload.commit()

    async def abort(self) -> None:
        await self.upload.abort()


class FullStorage(LocalStorage):
    """A home whose disk is full."""

    async def open_upload(self, vpath: str, offset: int = 0, append: bool = False) -> Upload:
        return FullUpload(await super().open_upload(vpath, offset, append))


def run_client(port: int, options: ClientOptions, work: str, *args: object) -> None:
    async def main() -> None:
        async with FTPClient(options) as ftp:
            await ftp.connect("127.0.0.1", port)
            await ftp.login("alice", "secret")
            await getattr(ftp, work)(*args)

    asyncio.run(main())


def test_refused_before_opening_says_not_opened(server) -> None:
    options = ClientOptions(passive=False, active_address="127.0.0.2")  # not the control connection's address
    with pytest.raises(DataConnectionError) as info:
        run_client(server.port, options, "read_bytes", "hello.txt")
    assert info.value.mode == "active"
    assert info.value.opened is False


def test_broken_after_opening_is_not_retried_in_the_other_mode(servers, tree: Path, tmp_path: Path) -> None:
    server = servers.start(tree, storage_factory=FullStorage, users=["alice:secret"])
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:  # far more than the socket buffers hold: the server's reset reaches the sender
        fh.truncate(64 << 20)
    lines: list[str] = []
    options = ClientOptions(fallback=True, transcript=lambda direction, text: lines.append(f"{direction} {text}"))
    with pytest.raises(DataConnectionError) as info:
        run_client(server.port, options, "upload", big, "big.bin")
    assert info.value.opened is True
    assert info.value.mode == "passive"
    assert info.value.reply is not None and info.value.reply.code == 452
    assert "broke during STOR" in str(info.value)
    assert [line for line in lines if line.startswith("--> STOR")] == ["--> STOR big.bin"]  # sent once
    assert not any("--fallback" in line for line in lines)
