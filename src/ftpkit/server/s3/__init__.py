"""S3-compatible object storage behind the :class:`~ftpkit.server.storage.Storage` protocol (``storage =
"s3://BUCKET[/PREFIX]"``); sessions do not know which backend they talk to.

- ``backend.py``: :class:`S3Backend`, one per server: the settings (AWS SDK conventions), the shared client and its
  connection pool, the start-up check, and the sweeper of abandoned multipart uploads.
- ``storage.py``: :class:`S3Storage`, one per session: a user's home is a key prefix; directories are prefixes
  (``MKD`` writes a marker object ``dir/``); listings stream ListObjectsV2 pages.
- ``transfers.py``: downloads are streamed GETs (``REST``: a ranged GET); uploads are multipart uploads, parts
  sent while the next one arrives; a resumed upload copies the stored bytes server-side (UploadPartCopy).
- ``errors.py``: what the S3 library raises, as :class:`~ftpkit.server.storage.StorageError` replies.

Methods added to the ``Storage`` protocol later (HASH, MFMT, AVBL: ``digest``, ``set_times``, ``chmod``,
``free_space``) need a version in :class:`S3Storage` too.

Importing this package needs the S3 library (``pip install 'ftpkit[s3]'``); the server imports it only when
``storage`` names a bucket.
"""

from ftpkit.server.s3.backend import S3Backend, S3Location
from ftpkit.server.s3.storage import S3Storage

__all__ = ["S3Backend", "S3Location", "S3Storage"]
