"""One S3 backend per server: where the objects are, the shared client, the start-up check, housekeeping.

Endpoint, region and credentials follow the AWS SDK conventions: the settings ``aws_endpoint_url``,
``aws_region``, ``aws_access_key_id``, ``aws_secret_access_key`` (also written ``AWS_...`` in the config file),
else the environment variables of the same names, else the SDK's own sources (``~/.aws``, instance roles). The
secret key is never logged or shown: errors name the setting, not its value.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
)

from ftpkit.server.config import ConfigError, ServerConfig
from ftpkit.server.s3.errors import FAILURES, describe, error_code
from ftpkit.server.s3.storage import S3Storage

log = logging.getLogger("ftpkit.server")

PART_SIZE = 8 << 20
"""Bytes per part of a multipart upload (S3 wants at least 5 MiB for every part but the last)."""
PARTS_IN_FLIGHT = 2
"""Parts of one upload sent at once while the next one arrives: an upload holds at most this many parts plus one
in memory, whatever the file's size."""
LIST_PAGE = 1000
"""Keys per ListObjectsV2 page (S3's maximum): a listing holds one page at a time."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """``s3://BUCKET[/PREFIX]``: ``prefix`` is ``""`` or ends with ``/``."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        bucket, _, prefix = url[5:].partition("/")
        parts = [part for part in prefix.split("/") if part]
        return cls(bucket, "".join(part + "/" for part in parts))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class S3Backend:
    """The objects under ``cfg.storage``; :meth:`open` before serving, :meth:`close` at the end.

    :meth:`storage_for` is the server's storage factory: it maps the account's home to a key prefix."""

    def __init__(self, cfg: ServerConfig, part_size: int = PART_SIZE, parts_in_flight: int = PARTS_IN_FLIGHT,
                 page_size: int = LIST_PAGE) -> None:
        assert cfg.storage is not None
        self.cfg = cfg
        self.location = S3Location.parse(cfg.storage)
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.page_size = page_size
        self.endpoint = cfg.aws_endpoint_url or _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        self.region = cfg.aws_region or _env("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1"
        self.client: Any = None
        self._stack = contextlib.AsyncExitStack()

    def describe(self) -> str:
        return f"{self.location} at {self.endpoint or 'AWS S3'} ({self.region})"

    async def open(self) -> None:
        """Create the client and check that the bucket answers; a :class:`ConfigError` naming the setting if not."""
        config = AioConfig(
            connect_timeout=10, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=self.cfg.max_sessions * (self.parts_in_flight + 1) + 8,
            s3={"addressing_style": "path"} if self.endpoint else {},
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        self.client = await self._stack.enter_async_context(get_session().create_client(
            "s3", region_name=self.region, endpoint_url=self.endpoint, config=config,
            aws_access_key_id=self.cfg.aws_access_key_id, aws_secret_access_key=self.cfg.aws_secret_access_key,
        ))
        try:
            await self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=self.location.prefix, MaxKeys=1)
        except FAILURES as exc:
            await self.close()
            raise self._start_error(exc) from None

    def _start_error(self, exc: BaseException) -> ConfigError:
        where = self.endpoint or "AWS S3"
        if isinstance(exc, ClientError):
            code = error_code(exc)
            if code == "NoSuchBucket":
                return ConfigError("storage", f"bucket {self.location.bucket!r} does not exist at {where}")
            if code == "SignatureDoesNotMatch":
                return ConfigError("aws_secret_access_key", f"{where} refused the secret key ({describe(exc)})")
            if code in ("InvalidAccessKeyId", "AccessDenied", "403", "AllAccessDisabled"):
                return ConfigError("aws_access_key_id", f"{where} refused access to {self.location} "
                                                        f"({describe(exc)})")
            return ConfigError("storage", f"{self.location} at {where}: {describe(exc)}")
        if isinstance(exc, NoCredentialsError):
            return ConfigError("aws_access_key_id", "no S3 credentials: set aws_access_key_id and "
                                                    "aws_secret_access_key, or AWS_ACCESS_KEY_ID and "
                                                    "AWS_SECRET_ACCESS_KEY")
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | OSError) or not isinstance(
                exc, BotoCoreError):
            return ConfigError("aws_endpoint_url", f"cannot reach the S3 service at {where}: {describe(exc)}")
        return ConfigError("storage", f"{self.location} at {where}: {describe(exc)}")

    async def close(self) -> None:
        await self._stack.aclose()
        self.client = None

    # --- homes -------------------------------------------------------------------------------------------------
    def home_prefix(self, home: Path) -> str:
        """The key prefix of a home: its path relative to the served root under the configured prefix (the root
        itself is the prefix); a home outside the root keeps its absolute path below the prefix."""
        try:
            parts = home.relative_to(self.cfg.root).parts
        except ValueError:
            parts = home.parts[1:] if home.is_absolute() else home.parts
        parts = tuple(part for part in parts if part not in ("", "."))
        if ".." in parts:
            raise ValueError(f"{home}: a home may not contain ..")
        return self.location.prefix + "".join(part + "/" for part in parts)

    def storage_for(self, home: Path, executor: Executor | None = None) -> S3Storage:
        """The storage of one session (the server's ``storage_factory``); ``executor`` is not needed."""
        return S3Storage(self, self.home_prefix(home))

    # --- housekeeping ------------------------------------------------------------------------------------------
    async def sweep_uploads(self, max_age: float) -> int:
        """Abort multipart uploads under the prefix started more than ``max_age`` seconds ago (left by a server
        that was killed or lost the service mid-upload); how many. Invisible either way, they only take space."""
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=max_age)
        stale: list[tuple[str, str]] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.location.bucket, Prefix=self.location.prefix):
            for upload in page.get("Uploads", ()):
                initiated = upload.get("Initiated")
                if initiated is not None and initiated < cutoff:
                    stale.append((upload["Key"], upload["UploadId"]))
                    if len(stale) >= 10000:  # bounded: the rest at the next sweep
                        break
        for key, upload_id in stale:
            with contextlib.suppress(*FAILURES):
                await self.client.abort_multipart_upload(Bucket=self.location.bucket, Key=key, UploadId=upload_id)
        return len(stale)

    async def sweep_forever(self) -> None:
        period = self.cfg.sweep_period
        while True:
            try:
                removed = await self.sweep_uploads(self.cfg.partial_ttl)
            except FAILURES as exc:
                log.warning("aborting stale multipart uploads under %s: %s", self.location, describe(exc))
            else:
                if removed:
                    log.info("aborted %d stale multipart upload(s) under %s (older than %g s)", removed,
                             self.location, self.cfg.partial_ttl)
            await asyncio.sleep(period)
