"""One small interface for local paths and ``s3://bucket/key``: list, read, write, upload,
download. :func:`storage_for` picks the implementation; boto3 is imported only for S3."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from blocktrain.core.files import write_bytes_atomic
from blocktrain.data.integrity import CHUNK
from blocktrain.data.names import is_hidden, is_s3, normalize_source, parse_s3
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


def storage_for(source: str | Path, env: Mapping[str, str] | None = None) -> Storage:
    """:class:`LocalStorage` for paths, an S3 storage configured from ``env`` (default: the
    process environment) for ``s3://`` URIs."""
    if is_s3(source):
        from blocktrain.data.s3 import S3Config, S3Storage

        return S3Storage(S3Config.from_environ(os.environ if env is None else env))
    return LocalStorage()


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
    from blocktrain.data.integrity import etag_verdict

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


class LocalStorage:
    """Files on a local or shared file system."""

    concurrency = 8

    def list(self, source: str) -> Listing:
        root = Path(source)
        if root.is_file():
            return Listing(source, True, (ObjectInfo(root.name, root.stat().st_size),))
        if not root.is_dir():
            raise SourceNotFoundError(f"{source} does not exist; check the path")
        objects: list[ObjectInfo] = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                path = Path(folder, file)
                name = path.relative_to(root).as_posix()
                if not is_hidden(name) and path.is_file():
                    objects.append(ObjectInfo(name, path.stat().st_size))
        return Listing(source, False, tuple(objects))

    def exists(self, source: str) -> bool:
        return Path(source).exists()

    def read(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise SourceNotFoundError(f"{uri} does not exist; check the path") from None

    def write(self, uri: str, data: bytes) -> None:
        write_bytes_atomic(Path(uri), data)

    def upload(self, local: Path, uri: str) -> int:
        listing = self.list(normalize_source(local))
        for info in listing.objects:
            target = Path(uri) if listing.is_file else Path(uri) / info.name
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.upload")
            shutil.copyfile(listing.member(info.name), temporary)
            temporary.replace(target)
        return len(listing.objects)

    def download(self, uri: str, dest: Path, expected: ObjectInfo | None = None) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        if not Path(uri).is_file():
            raise SourceNotFoundError(f"{uri} does not exist; check the path")
        with Path(uri).open("rb") as source, dest.open("wb") as out:
            while block := source.read(CHUNK):
                digest.update(block)
                out.write(block)
        md5 = digest.hexdigest()
        check_expected(dest, md5, expected, uri)
        return md5
