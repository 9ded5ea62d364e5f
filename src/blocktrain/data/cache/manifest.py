"""What an entry holds, on disk: the manifest ``NAME.entry.json`` that marks a complete entry
(each file's size, MD5, ETag and modification time) and the journal ``NAME.journal`` of files
placed while the entry fills.

Owns the formats of those two files; must not fetch, lock or decide what to fetch.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from blocktrain.core.atomic import write_text_atomic
from blocktrain.data.cache.config import Entry
from blocktrain.data.objects import Listing, ObjectInfo

MANIFEST_FORMAT = 1
# Files in a shared cache are readable by whoever may read the cache: the umask decides.
SHARED = 0o666


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What a placed file was: its size and MD5, the origin's ETag, and the modification time
    it got here (a later change of content changes it)."""

    size: int
    md5: str
    etag: str | None
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Manifest:
    origin: str  # the dataset as the user named it (normalized)
    source: str  # where these files were copied from (the origin, or the persistent entry)
    kind: Literal["file", "dir"]
    files: dict[str, FileRecord]
    created: str

    @property
    def total_bytes(self) -> int:
        return sum(record.size for record in self.files.values())

    def path_in(self, entry: Entry) -> Path:
        """What ``localize`` returns for ``entry``: the folder, or the single file in it."""
        if self.kind == "file":
            return entry.data / next(iter(self.files))
        return entry.data


def read_manifest(entry: Entry) -> Manifest | None:
    """The entry's manifest; None when it has none (incomplete) or an unreadable one."""
    try:
        data = json.loads(entry.manifest.read_text())
        if data.get("format") != MANIFEST_FORMAT:
            return None
        files = {name: FileRecord(**record) for name, record in data["files"].items()}
        return Manifest(
            origin=data["origin"],
            source=data["source"],
            kind=data["kind"],
            files=files,
            created=data["created"],
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write_manifest(entry: Entry, manifest: Manifest) -> None:
    """Atomically and durably: its presence marks the entry complete."""
    data = {"format": MANIFEST_FORMAT, **asdict(manifest)}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_text_atomic(entry.manifest, text, mode=SHARED)


def listing_of(entry: Entry, manifest: Manifest) -> Listing:
    """A complete entry as a listing to copy from: each file with the MD5 it must have."""
    objects = tuple(
        ObjectInfo(name, record.size, record.md5) for name, record in manifest.files.items()
    )
    return Listing(str(manifest.path_in(entry)), manifest.kind == "file", objects)


def known_records(entry: Entry, origin: str) -> dict[str, FileRecord]:
    """Records of files placed earlier: the old manifest, then a journal left by a fill that
    was interrupted."""
    manifest = read_manifest(entry)
    known = dict(manifest.files) if manifest is not None and manifest.origin == origin else {}
    with contextlib.suppress(FileNotFoundError):
        for line in entry.journal.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                item = json.loads(line)
                name = item.pop("name")
                known[name] = FileRecord(**item)
    return known


class Journal:
    """Records of the files an entry holds while it fills, shared by the fetching threads;
    begun afresh with the files kept from before, then appended to."""

    def __init__(self, path: Path, kept: Mapping[str, FileRecord]) -> None:
        self._lock = threading.Lock()
        lines = "".join(self._line(name, record) for name, record in kept.items())
        write_text_atomic(path, lines, mode=SHARED)
        self._handle = path.open("a")

    @staticmethod
    def _line(name: str, record: FileRecord) -> str:
        return json.dumps({"name": name, **asdict(record)}) + "\n"

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def add(self, name: str, record: FileRecord) -> None:
        line = self._line(name, record)
        with self._lock:
            self._handle.write(line)
            self._handle.flush()
