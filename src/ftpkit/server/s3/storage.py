"""A user's home on S3: a key prefix. A :class:`~ftpkit.server.storage.Storage`.

A virtual path ``/dir/name`` is the key ``HOME/dir/name``. Directories are prefixes: ``MKD`` writes a marker object
``dir/`` (empty), a directory exists while its marker or any key below it does, ``RMD`` removes the marker of an
empty one. ``SIZE``/``MDTM`` come from HEAD. ``RNFR``/``RNTO`` of a file is a server-side copy, then a delete: not
atomic (a reader may see both names for a moment; a failure between the two leaves both). Directories cannot be
renamed (every key below would have to be copied).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import stat as statmod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ftpkit.protocol.hashes import new_hash
from ftpkit.protocol.listing import Facts
from ftpkit.server.s3.errors import FAILURES, error_code, is_not_found, storage_error, translated
from ftpkit.server.s3.transfers import MAX_COPY_PART, S3Download, S3Upload, copy_parts
from ftpkit.server.storage import Download, StorageError, Upload, glob_matcher

if TYPE_CHECKING:
    from ftpkit.server.s3.backend import S3Backend

FILE_MODE = statmod.S_IFREG | 0o644
DIR_MODE = statmod.S_IFDIR | 0o755
SINGLE_COPY_LIMIT = 5 << 30
"""CopyObject copies up to 5 GiB; a larger object is copied as a multipart upload of ranged part copies."""


def _file_facts(name: str, key: str, size: int, modified: Any) -> Facts:
    mtime = modified.timestamp() if modified is not None else 0.0
    return Facts(name, FILE_MODE, size, mtime, 1, _unique(key))


def _dir_facts(name: str, key: str, modified: Any = None) -> Facts:
    mtime = modified.timestamp() if modified is not None else 0.0
    return Facts(name, DIR_MODE, 0, mtime, 1, _unique(key))


def _unique(key: str) -> str:
    return hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


class S3Storage:
    """One session's view of the bucket: ``base`` is its home's key prefix (``""`` or ending with ``/``)."""

    def __init__(self, backend: S3Backend, base: str) -> None:
        self.backend = backend
        self.bucket = backend.location.bucket
        self.base = base

    @property
    def client(self) -> Any:
        return self.backend.client

    # --- keys ------------------------------------------------------------------------------------------------
    def key(self, vpath: str) -> str:
        """The object key of a virtual path (``""``-relative to the bucket; the home itself is ``base``)."""
        if "\0" in vpath:
            raise StorageError(f"{vpath.replace(chr(0), '^@')}: a NUL byte is not allowed in a path")
        key = self.base + vpath.strip("/")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise StorageError(f"{vpath}: object storage keys are UTF-8; this name is not", 553) from None
        return key

    def _dir_prefix(self, vpath: str) -> str:
        key = self.key(vpath)
        return key + "/" if vpath.strip("/") else self.base

    async def _head(self, key: str, vpath: str) -> dict[str, Any] | None:
        """The object's HEAD, or ``None`` when there is no such key."""
        try:
            result: dict[str, Any] = await self.client.head_object(Bucket=self.bucket, Key=key)
        except FAILURES as exc:
            if is_not_found(exc):
                return None
            raise storage_error(exc, vpath) from None
        return result

    async def _dir_exists(self, vpath: str) -> Facts | None:
        """Facts of the directory ``vpath`` (a marker or any key below it), or ``None``."""
        if not vpath.strip("/"):
            return _dir_facts("/", self.base)
        prefix = self._dir_prefix(vpath)
        with translated(vpath):
            page = await self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        contents = page.get("Contents") or []
        if not contents:
            return None
        first = contents[0]
        modified = first.get("LastModified") if first["Key"] == prefix else None
        return _dir_facts(posixpath.basename(vpath.rstrip("/")), prefix, modified)

    async def _need_dir(self, vdir: str, vpath: str) -> None:
        """``vdir`` must be an existing directory (the parent of something created)."""
        if await self._dir_exists(vdir) is None:
            raise StorageError(f"{vpath}: No such file or directory")

    # --- Storage ---------------------------------------------------------------------------------------------
    async def stat(self, vpath: str) -> Facts:
        key = self.key(vpath)
        if vpath.strip("/"):
            head = await self._head(key, vpath)
            if head is not None:
                return _file_facts(posixpath.basename(vpath), key, head["ContentLength"], head.get("LastModified"))
        facts = await self._dir_exists(vpath)
        if facts is None:
            raise StorageError(f"{vpath}: No such file or directory")
        return facts

    async def listdir(self, vpath: str, pattern: str | None = None) -> AsyncIterator[Facts]:
        """ListObjectsV2 with delimiter ``/``, page by page: one page (up to 1000 keys) in memory at a time.
        S3 returns keys and common prefixes in one lexicographic order, so sorting each page sorts the listing."""
        prefix = self._dir_prefix(vpath)
        matches = glob_matcher(pattern)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/",
                                   PaginationConfig={"PageSize": self.backend.page_size})
        iterator = pages.__aiter__()
        while True:
            with translated(vpath):
                try:
                    page = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            entries: list[Facts] = []
            for item in page.get("Contents") or ():
                name = item["Key"][len(prefix):]
                if name and "/" not in name:  # "" is the directory's own marker
                    entries.append(_file_facts(name, item["Key"], item.get("Size", 0), item.get("LastModified")))
            for item in page.get("CommonPrefixes") or ():
                name = item["Prefix"][len(prefix):].rstrip("/")
                if name:
                    entries.append(_dir_facts(name, item["Prefix"]))
            entries.sort(key=lambda f: f.name.encode("utf-8", "surrogateescape"))
            for facts in entries:
                if matches(facts.name):
                    yield facts

    async def open_read(self, vpath: str, offset: int = 0) -> Download:
        key = self.key(vpath)
        if not vpath.strip("/"):
            raise StorageError(f"{vpath}: not a plain file")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset:
            params["Range"] = f"bytes={offset}-"
        try:
            response = await self.client.get_object(**params)
        except FAILURES as exc:
            if is_not_found(exc):
                if await self._dir_exists(vpath) is not None:
                    raise StorageError(f"{vpath}: not a plain file") from None
                raise StorageError(f"{vpath}: No such file or directory") from None
            if offset and _is_invalid_range(exc):  # REST at or past the end: nothing to send, as with a file
                head = await self._head(key, vpath)
                if head is None:
                    raise StorageError(f"{vpath}: No such file or directory") from None
                return S3Download(None, head["ContentLength"], offset, vpath)
            raise storage_error(exc, vpath) from None
        size = response["ContentLength"] + offset
        content_range = response.get("ContentRange") or ""
        if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
            size = int(content_range.rsplit("/", 1)[1])
        return S3Download(response["Body"], size, offset, vpath)

    # --- integrity (HASH, MFMT, SITE CHMOD, AVBL) --------------------------------------------------------------
    async def digest(self, vpath: str, algorithm: str, start: int, end: int) -> str:
        """The object read as RETR reads it (a ranged, streamed GET), hashed as it streams: flat memory."""
        hasher = new_hash(algorithm)
        download = await self.open_read(vpath, start)
        try:
            left = max(0, min(end, download.size) - start)
            while left > 0:
                chunk = await download.read(min(left, 1 << 20))
                if not chunk:
                    break
                hasher.update(chunk[:left])
                left -= len(chunk)
        finally:
            await download.close()
        return hasher.hexdigest()

    async def set_times(self, vpath: str, mtime: float) -> None:
        await self.stat(vpath)  # 550 for a name that is not there
        raise StorageError(f"{vpath}: object storage sets an object's time itself (it cannot be changed)", 550)

    async def chmod(self, vpath: str, mode: int) -> bool:
        await self.stat(vpath)
        return False  # objects have no permission bits

    async def free_space(self, vpath: str) -> int | None:
        return None  # an S3 bucket has no free space to tell

    async def _upload_target(self, vpath: str) -> str:
        """The key of a new upload to ``vpath``: not a directory, and its parent exists."""
        key = self.key(vpath)
        if not vpath.strip("/") or await self._dir_exists(vpath) is not None:
            raise StorageError(f"{vpath}: Is a directory")
        await self._need_dir(posixpath.dirname(vpath), vpath)
        return key

    async def open_upload(self, vpath: str, offset: int = 0, append: bool = False) -> Upload:
        """A multipart upload, visible at :meth:`S3Upload.commit`. ``REST n`` / ``APPE`` continue the stored
        object itself (there is no partial: an interrupted upload was aborted): its first bytes are copied on the
        service's side, then the client's bytes follow."""
        key = await self._upload_target(vpath)
        upload = S3Upload(self.backend, key, vpath)
        if offset or append:
            head = await self._head(key, vpath)
            have = head["ContentLength"] if head is not None else 0
            start = have if append else offset
            if start > have:
                raise StorageError(f"{vpath}: restart offset {offset} is beyond the {have} bytes stored so far", 554)
            if start:
                assert head is not None
                await upload.start_from(key, head["ETag"], start)
        return upload

    async def upload_size(self, vpath: str) -> int | None:
        """Always ``None``: an interrupted upload is aborted (nothing half-written is kept or visible), so there
        is never a partial to resume; the object is still its previous version."""
        return None

    async def create_unique(self, vdir: str, stem: str) -> tuple[str, Upload]:
        await self._need_dir(vdir, vdir)
        for n in range(1000):
            name = stem if n == 0 else f"{stem}.{n}"
            vpath = posixpath.join(vdir, name)
            key = self.key(vpath)
            if await self._head(key, vpath) is None and await self._dir_exists(vpath) is None:
                return name, S3Upload(self.backend, key, vpath, exclusive=True)
        raise StorageError(f"{vdir}: no unique name found", 450)

    async def mkdir(self, vpath: str) -> None:
        if not vpath.strip("/"):
            raise StorageError(f"{vpath}: File exists")
        key = self.key(vpath)
        if await self._head(key, vpath) is not None or await self._dir_exists(vpath) is not None:
            raise StorageError(f"{vpath}: File exists")
        await self._need_dir(posixpath.dirname(vpath), vpath)
        with translated(vpath):
            await self.client.put_object(Bucket=self.bucket, Key=key + "/", Body=b"")

    async def rmdir(self, vpath: str) -> None:
        if not vpath.strip("/"):
            raise StorageError("/: the home directory cannot be removed")
        prefix = self._dir_prefix(vpath)
        with translated(vpath):
            page = await self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=2)
        keys = [item["Key"] for item in page.get("Contents") or ()]
        if not keys:
            if await self._head(self.key(vpath), vpath) is not None:
                raise StorageError(f"{vpath}: Not a directory")
            raise StorageError(f"{vpath}: No such file or directory")
        if keys != [prefix]:
            raise StorageError(f"{vpath}: Directory not empty")
        with translated(vpath):
            await self.client.delete_object(Bucket=self.bucket, Key=prefix)

    async def remove(self, vpath: str) -> None:
        key = self.key(vpath)
        if not vpath.strip("/") or await self._head(key, vpath) is None:
            if await self._dir_exists(vpath) is not None:
                raise StorageError(f"{vpath}: Is a directory (use RMD)")
            raise StorageError(f"{vpath}: No such file or directory")
        with translated(vpath):
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def rename(self, src: str, dst: str) -> None:
        """Copy on the service's side, then delete the source: not atomic."""
        if not src.strip("/"):
            raise StorageError(f"{src}: the home directory cannot be renamed")
        src_key, dst_key = self.key(src), self.key(dst)
        head = await self._head(src_key, src)
        if head is None:
            if await self._dir_exists(src) is not None:
                raise StorageError(f"{src}: renaming a directory is not supported on object storage")
            raise StorageError(f"{src}: No such file or directory")
        if src_key == dst_key:
            return
        if not dst.strip("/") or await self._dir_exists(dst) is not None:
            raise StorageError(f"{dst}: Is a directory")
        await self._need_dir(posixpath.dirname(dst), dst)
        size, etag = head["ContentLength"], head["ETag"]
        with translated(src):
            if size <= SINGLE_COPY_LIMIT:
                await self.client.copy_object(Bucket=self.bucket, Key=dst_key, CopySourceIfMatch=etag,
                                              CopySource={"Bucket": self.bucket, "Key": src_key})
            else:
                await _copy_large(self.backend, src_key, etag, size, dst_key)
            await self.client.delete_object(Bucket=self.bucket, Key=src_key)


def _is_invalid_range(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) in ("InvalidRange", "416")


async def _copy_large(backend: S3Backend, src_key: str, etag: str, size: int, dst_key: str) -> None:
    """A copy of an object over 5 GiB: a multipart upload of ranged part copies (each up to 1 GiB)."""
    client, bucket = backend.client, backend.location.bucket
    upload_id = (await client.create_multipart_upload(Bucket=bucket, Key=dst_key))["UploadId"]
    try:
        parts = await copy_parts(backend, dst_key, upload_id, src_key, etag, size, MAX_COPY_PART)
        await client.complete_multipart_upload(Bucket=bucket, Key=dst_key, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
    except BaseException:
        with contextlib.suppress(*FAILURES):
            await client.abort_multipart_upload(Bucket=bucket, Key=dst_key, UploadId=upload_id)
        raise
