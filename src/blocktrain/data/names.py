"""Pure naming rules: S3 URIs, safe member names, ``-tiny`` variants, cache entry names.

Must not read or write files, nor reach the network (a local path is only resolved).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from blocktrain.errors import BlocktrainError

S3_SCHEME = "s3://"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
TINY = "-tiny"


class UnsafeNameError(BlocktrainError):
    """A member name that would escape its folder (absolute, ``..``, empty)."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """``s3://bucket/key``; ``key`` may be empty (the whole bucket) or name a prefix."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Location:
        """The object ``name`` below this location taken as a folder."""
        prefix = self.key.rstrip("/")
        return S3Location(self.bucket, f"{prefix}/{name}" if prefix else name)


def is_s3(path: str | Path) -> bool:
    return isinstance(path, str) and path.startswith(S3_SCHEME)


def parse_s3(uri: str) -> S3Location:
    """Split ``s3://bucket/key``; the bucket must be named."""
    if not is_s3(uri):
        raise BlocktrainError(f"{uri!r} is not an S3 URI; write it as s3://BUCKET/KEY")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise BlocktrainError(f"{uri!r} names no bucket; write it as s3://BUCKET/KEY")
    return S3Location(bucket, key)


def normalize_source(path: str | Path) -> str:
    """A canonical text for a source: ``s3://bucket/key`` without a trailing slash, or an
    absolute local path. Two spellings of one dataset share one cache entry."""
    if is_s3(path):
        location = parse_s3(str(path))
        return f"{S3_SCHEME}{location.bucket}/{location.key.strip('/')}".rstrip("/")
    return str(Path(path).expanduser().resolve())


def safe_member_name(name: str, source: str) -> str:
    """``name`` as a clean relative POSIX path, or :class:`UnsafeNameError` when it is
    absolute, contains ``..``, or names nothing (archive members, S3 keys below a prefix)."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        raise UnsafeNameError(
            f"{source}: member {name!r} has an absolute or Windows path; rebuild the archive "
            "with relative member names"
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeNameError(
            f"{source}: member {name!r} contains '..'; rebuild the archive with member names "
            "inside it"
        )
    if not parts:
        raise UnsafeNameError(f"{source}: member {name!r} names nothing; remove it from {source}")
    return "/".join(parts)


def is_hidden(name: str) -> bool:
    """Members under a component starting with ``.`` (``.DS_Store``, partial downloads) or in
    ``__MACOSX`` are not part of a dataset."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def split_suffix(name: str) -> tuple[str, str]:
    """``("mnist", ".tar.gz")`` for ``mnist.tar.gz``; archive suffixes count as one."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    stem, suffix = posixpath.splitext(name)
    return stem, suffix


def tiny_variant(source: str) -> str | None:
    """The development variant of a normalized source: ``.../mnist`` -> ``.../mnist-tiny``,
    ``.../mnist.zip`` -> ``.../mnist-tiny.zip``; None when ``source`` is one already."""
    head, _, last = source.rpartition("/")
    stem, suffix = split_suffix(last)
    if not stem or stem.endswith(TINY):
        return None
    return f"{head}/{stem}{TINY}{suffix}" if head else f"{stem}{TINY}{suffix}"


def entry_name(source: str) -> str:
    """The cache entry's folder name: readable stem plus a digest of the whole source, so that
    ``s3://a/data`` and ``s3://b/data`` never share an entry."""
    last = source.rstrip("/").rpartition("/")[2] or "root"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", last)[:60].strip("._") or "entry"
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}"


def basename(source: str) -> str:
    """The last path component of a normalized source."""
    return source.rstrip("/").rpartition("/")[2]
