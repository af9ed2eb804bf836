"""Downloads and uploads on S3, with flat memory whatever the size.

A download is one GET streamed to the data connection (``REST n``: a ranged GET from ``n``). An upload collects
the client's bytes into parts of ``part_size`` and sends each as a part of a multipart upload while the next one
arrives (at most ``parts_in_flight`` at once: the data connection pauses when they are all busy); a file smaller
than one part is a single PUT. :meth:`S3Upload.commit` completes the upload (the object appears whole, replacing
the previous version, before the 226); :meth:`S3Upload.abort` aborts it, so nothing half-written is ever visible.
A resumed upload (``REST n`` + ``STOR``, ``APPE``) does not receive the stored bytes again: the first ``n`` bytes
of the stored object are copied on the service's side (UploadPartCopy of byte ranges), then the new parts follow.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, BinaryIO

from ftpkit.server.s3.errors import FAILURES, storage_error, translated
from ftpkit.server.storage import StorageError

if TYPE_CHECKING:
    from ftpkit.server.s3.backend import S3Backend

MIN_PART = 5 << 20
"""S3's smallest part (all but the last); a stored prefix shorter than this is read back instead of copied."""
MAX_COPY_PART = 1 << 30
"""Largest byte range copied by one UploadPartCopy (S3 allows 5 GiB; smaller ranges run at once)."""

Part = dict[str, Any]


class S3Download:
    """A streamed GET: ``file`` is ``None``, so the transfer reads the body chunk by chunk."""

    file: BinaryIO | None = None

    def __init__(self, body: Any, size: int, offset: int, vpath: str) -> None:
        self._body = body
        self.size = size
        self.offset = offset
        self.vpath = vpath

    async def read(self, size: int) -> bytes:
        if self._body is None:
            return b""
        with translated(self.vpath):
            data: bytes = await self._body.read(size)
        return data

    async def close(self) -> None:
        if self._body is not None:
            body, self._body = self._body, None
            body.close()  # a body not read to the end: its connection is dropped, not reused


def split_ranges(length: int, max_part: int) -> list[tuple[int, int]]:
    """``[0, length)`` as inclusive byte ranges of near-equal size, none over ``max_part``."""
    count = -(-length // max_part)
    bounds = [length * i // count for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]


async def copy_parts(backend: S3Backend, key: str, upload_id: str, src_key: str, etag: str, length: int,
                     max_part: int = MAX_COPY_PART, first: int = 1) -> list[Part]:
    """Copy the first ``length`` bytes of ``src_key`` (as it is at ``etag``) into the parts ``first``... of an
    upload, on the service's side; the parts, in order."""
    client, bucket = backend.client, backend.location.bucket
    parts = []
    for number, (low, high) in enumerate(split_ranges(length, max_part), first):
        result = await client.upload_part_copy(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, CopySourceIfMatch=etag,
            CopySource={"Bucket": bucket, "Key": src_key}, CopySourceRange=f"bytes={low}-{high}",
        )
        parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
    return parts


class S3Upload:
    """One upload in progress (an :class:`~ftpkit.server.storage.Upload`). ``exclusive``: complete only if the
    key does not exist yet (STOU; ``If-None-Match: *`` where the service supports it)."""

    def __init__(self, backend: S3Backend, key: str, vpath: str, exclusive: bool = False) -> None:
        self.backend = backend
        self.client = backend.client
        self.bucket = backend.location.bucket
        self.key = key
        self.vpath = vpath
        self.conditions: dict[str, str] = {"IfNoneMatch": "*"} if exclusive else {}
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[Part] = []
        self.next_part = 1
        self.sending: set[asyncio.Task[Any]] = set()
        self.finished = False

    async def _started(self) -> str:
        if self.upload_id is None:
            with translated(self.vpath):
                created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self.upload_id = created["UploadId"]
        return self.upload_id

    async def start_from(self, src_key: str, etag: str, length: int) -> None:
        """The upload begins with the first ``length`` bytes of the stored object ``src_key``."""
        if length < MIN_PART:  # too small to be a part followed by others: it goes into the first part
            with translated(self.vpath):
                response = await self.client.get_object(Bucket=self.bucket, Key=src_key, IfMatch=etag,
                                                        Range=f"bytes=0-{length - 1}")
                data = await response["Body"].read()
            if len(data) != length:
                raise StorageError(f"{self.vpath}: the stored object changed while the upload resumed", 451)
            self.buffer += data
            return
        upload_id = await self._started()
        first = self.next_part
        self.next_part += len(split_ranges(length, MAX_COPY_PART))
        self._launch(copy_parts(self.backend, self.key, upload_id, src_key, etag, length, MAX_COPY_PART, first))

    def _launch(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.sending.add(task)

    def _collect(self, done: set[asyncio.Task[Any]]) -> None:
        for task in done:
            self.sending.discard(task)
            exc = task.exception()
            if exc is not None:
                raise storage_error(exc, self.vpath) if isinstance(exc, FAILURES) else exc
            result = task.result()
            self.parts.extend(result if isinstance(result, list) else [result])

    async def _send_part(self, number: int, data: bytearray) -> Part:
        result = await self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                               PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": result["ETag"]}

    async def _send(self, data: bytearray) -> None:
        await self._started()
        while len(self.sending) >= self.backend.parts_in_flight:  # flat memory: wait for a part to finish
            done, _ = await asyncio.wait(self.sending, return_when=asyncio.FIRST_COMPLETED)
            self._collect(done)
        number, self.next_part = self.next_part, self.next_part + 1
        self._launch(self._send_part(number, data))

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self._collect({task for task in self.sending if task.done()})  # a failed part fails the transfer now
        self.buffer += data
        if len(self.buffer) >= self.backend.part_size:
            part, self.buffer = self.buffer, bytearray()
            await self._send(part)

    async def commit(self) -> None:
        if self.upload_id is None:  # smaller than a part: one PUT
            with translated(self.vpath):
                await self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self.buffer, **self.conditions)
            self.finished = True
            return
        if self.buffer:
            part, self.buffer = self.buffer, bytearray()
            await self._send(part)
        while self.sending:
            done, _ = await asyncio.wait(self.sending, return_when=asyncio.FIRST_COMPLETED)
            self._collect(done)
        self.parts.sort(key=lambda part: part["PartNumber"])
        with translated(self.vpath):
            await self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                        MultipartUpload={"Parts": self.parts}, **self.conditions)
        self.finished = True

    async def abort(self) -> None:
        """Abort the multipart upload: the parts sent are dropped, the object stays as it was."""
        if self.finished:
            return
        self.finished = True
        self.buffer = bytearray()
        for task in self.sending:
            task.cancel()
        if self.sending:
            await asyncio.gather(*self.sending, return_exceptions=True)
        self.sending.clear()
        if self.upload_id is not None:
            with translated(self.vpath):
                await self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)

