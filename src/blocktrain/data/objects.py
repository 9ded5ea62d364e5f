"""The storage interface: the :class:`Storage` protocol, what it lists (:class:`ObjectInfo`,
:class:`Listing`), its errors, and the check of a copy against its listing.

Shared by every implementation (``localfs``, ``s3``) and by their users; must not import an
implementation, nor boto3.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from blocktrain.data.integrity import etag_verdict
from blocktrain.data.names import is_s3, parse_s3
from blocktrain.errors import BlocktrainError


class SourceNotFoundError(BlocktrainError):
    """A path, bucket, key or prefix that does not exist."""


class IntegrityMismatchError(BlocktrainError):
    """Bytes that do not match the size or checksum they should have."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One file of a listing: ``name`` relative to the listed source (a single file's name is
    its basename); ``etag`` is the S3 ETag, or an MD5 the copy must match, when known."""

    name: str
    size: int
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """What a source holds: one file, or the files below a folder or S3 prefix."""

    source: str
    is_file: bool
    objects: tuple[ObjectInfo, ...]

    def member(self, name: str) -> str:
        """The URI or path of the member ``name``."""
        if self.is_file:
            return self.source
        if is_s3(self.source):
            return parse_s3(self.source).child(name).uri
        return str(Path(self.source) / name)

    @property
    def total_bytes(self) -> int:
        return sum(info.size for info in self.objects)


class Storage(Protocol):
    """Where datasets live. ``source`` arguments are normalized (see ``names``)."""

    @property
    def concurrency(self) -> int:
        """How many transfers to run at once."""
        ...

    def list(self, source: str) -> Listing:
        """The file at ``source`` or the files below it; :class:`SourceNotFoundError` when none."""
        ...

    def exists(self, source: str) -> bool: ...

    def read(self, uri: str) -> bytes: ...

    def write(self, uri: str, data: bytes) -> None: ...

    def upload(self, local: Path, uri: str) -> int:
        """Copy a local file, or a folder's files below ``uri``; returns the files copied."""
        ...

    def download(self, uri: str, dest: Path, expected: ObjectInfo | None = None) -> str:
        """Write the object at ``uri`` to ``dest`` (a temporary name the caller renames) and
        return its MD5; :class:`IntegrityMismatchError` when size or checksum differ from
        ``expected``."""
        ...


def check_expected(
    path: Path,
    md5: str,
    expected: ObjectInfo | None,
    source: str,
    part_sizes: Iterable[int] = (),
) -> None:
    """Size and, where the ETag tells, content of a copy against its origin."""
    if expected is None:
        return
    size = path.stat().st_size
    if size != expected.size:
        raise IntegrityMismatchError(
            f"{source}: got {size} bytes, expected {expected.size}; it changed or the transfer "
            "broke off, fetch it again"
        )
    if etag_verdict(expected.etag, md5, path, part_sizes) == "mismatch":
        raise IntegrityMismatchError(
            f"{source}: content does not match its checksum {expected.etag}; fetch it again"
        )
