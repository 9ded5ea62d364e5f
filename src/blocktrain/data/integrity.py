"""Content checks: MD5 digests and S3 ETags (single-part and multipart).

Pure computation over bytes and files; must not fetch, rename or delete anything.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

CHUNK = 1 << 20
MIB = 1 << 20
# Part sizes that common S3 clients use; a multipart ETag can only be checked with the right one.
COMMON_PART_SIZES = (8 * MIB, 5 * MIB, 16 * MIB, 15 * MIB, 32 * MIB, 64 * MIB, 100 * MIB)
_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^([0-9a-f]{32})-(\d+)$")

Verdict = Literal["match", "mismatch", "unknown"]


def clean_etag(etag: str | None) -> str | None:
    """An ETag without its quotes, lower case; None stays None."""
    return etag.strip().strip('"').lower() if etag else None


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives an object uploaded from ``path`` in parts of ``part_size`` bytes."""
    parts: list[bytes] = []
    with path.open("rb") as handle:
        while True:
            part = hashlib.md5(usedforsecurity=False)
            remaining = part_size
            while remaining and (block := handle.read(min(CHUNK, remaining))):
                part.update(block)
                remaining -= len(block)
            if remaining == part_size:
                break
            parts.append(part.digest())
    combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(parts)}"


def candidate_part_sizes(size: int, parts: int, preferred: Iterable[int]) -> list[int]:
    """Part sizes that split ``size`` bytes into exactly ``parts`` parts, preferred first."""
    found: list[int] = []
    for part_size in (*preferred, *COMMON_PART_SIZES):
        if part_size > 0 and part_size not in found and math.ceil(size / part_size) == parts:
            found.append(part_size)
    return found


def etag_verdict(etag: str | None, md5: str, path: Path, part_sizes: Iterable[int] = ()) -> Verdict:
    """Whether the file at ``path`` (MD5 ``md5``) is the object with this ETag. A plain ETag is
    the object's MD5; a multipart one (``md5-of-part-md5s-N``) matches only when recomputed with
    the uploader's part size, so a miss there, an opaque ETag (encrypted objects) or none at all
    proves nothing: "unknown"."""
    tag = clean_etag(etag)
    if tag is None:
        return "unknown"
    if _PLAIN_ETAG.match(tag):
        return "match" if tag == md5 else "mismatch"
    multipart = _MULTIPART_ETAG.match(tag)
    if multipart is None:
        return "unknown"
    candidates = candidate_part_sizes(path.stat().st_size, int(multipart.group(2)), part_sizes)
    if any(multipart_etag(path, part_size) == tag for part_size in candidates):
        return "match"
    return "unknown"
