"""What the S3 library raises, as :class:`StorageError` replies: a missing key is a 550 like a missing file; the
service unreachable or failing is a 451 naming the backend's error (the session and the server go on)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from ftpkit.server.storage import StorageError

NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchUpload"})
DENIED = frozenset({"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"})
FAILURES = (ClientError, BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError)
"""Everything a call into the S3 library may raise for a reason outside ftpkit."""


def error_code(exc: ClientError) -> str:
    error: dict[str, Any] = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) in NOT_FOUND


def describe(exc: BaseException) -> str:
    """The backend's error in one line (no request ids, no credentials)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error_code(exc), str(error.get("Message") or "").strip()
        return f"{code}: {message}" if message and message != code else code
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def storage_error(exc: BaseException, vpath: str) -> StorageError:
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in NOT_FOUND:
            return StorageError(f"{vpath}: No such file or directory")
        if code in DENIED:
            return StorageError(f"{vpath}: Permission denied (S3 backend: {describe(exc)})")
        if code in ("EntityTooLarge", "QuotaExceeded"):
            return StorageError(f"{vpath}: storage full (S3 backend: {describe(exc)})", 552)
        if code in ("KeyTooLongError", "InvalidObjectName"):
            return StorageError(f"{vpath}: File name too long or not allowed (S3 backend: {describe(exc)})", 553)
    return StorageError(f"{vpath}: S3 backend error: {describe(exc)}", 451)


@contextmanager
def translated(vpath: str) -> Iterator[None]:
    """``with translated(vpath): await client.call(...)``: the library's failures become :class:`StorageError`."""
    try:
        yield
    except FAILURES as exc:
        raise storage_error(exc, vpath) from None
