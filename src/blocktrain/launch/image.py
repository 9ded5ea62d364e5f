"""The content digest of a container image file, cached by size and modification time."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from blocktrain.core.files import write_text_atomic
from blocktrain.errors import BlocktrainError

_CHUNK = 1 << 20


def digest(image: Path) -> str:
    """``sha256:<hex>`` of the image; recomputed only when the file changed."""
    try:
        stat = image.stat()
    except FileNotFoundError:
        raise BlocktrainError(
            f"image {image} not found; build it with `make training-image`"
        ) from None
    cache = image.with_name(f".{image.name}.sha256.json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return str(cached["digest"])
    except (OSError, ValueError, KeyError):
        pass
    sha = hashlib.sha256()
    with image.open("rb") as data:
        while chunk := data.read(_CHUNK):
            sha.update(chunk)
    value = f"sha256:{sha.hexdigest()}"
    with contextlib.suppress(OSError):  # a read-only image folder: compute again next time
        write_text_atomic(cache, json.dumps({"key": key, "digest": value}))
    return value
