"""One small interface for local paths and ``s3://bucket/key``: list, read, write, upload,
download. :func:`storage_for` picks the implementation for a source.

The interface is in ``objects``, the implementations in ``localfs`` and ``s3``; this module
gathers them under one name. Must not import ``s3`` (and so boto3) before an ``s3://`` source
asks for it: that keeps ``import blocktrain.data.storage`` cheap and the modules acyclic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from blocktrain.data.localfs import LocalStorage
from blocktrain.data.names import is_s3
from blocktrain.data.objects import (
    IntegrityMismatchError,
    Listing,
    ObjectInfo,
    SourceNotFoundError,
    Storage,
    check_expected,
)

__all__ = [
    "IntegrityMismatchError",
    "Listing",
    "LocalStorage",
    "ObjectInfo",
    "SourceNotFoundError",
    "Storage",
    "check_expected",
    "storage_for",
]


def storage_for(source: str | Path, env: Mapping[str, str] | None = None) -> Storage:
    """:class:`LocalStorage` for paths, an S3 storage configured from ``env`` (default: the
    process environment) for ``s3://`` URIs."""
    if is_s3(source):
        from blocktrain.data.s3 import S3Config, S3Storage

        return S3Storage(S3Config.from_environ(os.environ if env is None else env))
    return LocalStorage()
