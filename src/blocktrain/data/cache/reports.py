"""What the cache levels hold, for ``blocktrain cache size``, and removing entries from them
(``blocktrain cache clean``).

Reads manifests and sizes and removes whole entries; must not fetch, and must not remove an
entry another process holds locked.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from blocktrain.core.atomic import try_locked
from blocktrain.data.cache.config import CacheConfig, Entry, LevelName
from blocktrain.data.cache.locks import holder_of
from blocktrain.data.cache.manifest import read_manifest
from blocktrain.data.names import basename


@dataclass(frozen=True, slots=True)
class EntryReport:
    """One entry of one level, for ``blocktrain cache size`` and ``clean``."""

    level: LevelName
    name: str
    origin: str | None
    files: int
    bytes: int
    complete: bool
    path: Path


def report(config: CacheConfig) -> list[EntryReport]:
    """Every entry of every configured level, complete or not, with its size."""
    return [
        _report(level_name, Entry(level, name))
        for level_name, level in config.levels().items()
        for name in _entry_names(level)
    ]


def _report(level: LevelName, entry: Entry) -> EntryReport:
    manifest = read_manifest(entry)
    if manifest is not None:
        files, size = len(manifest.files), manifest.total_bytes
        origin: str | None = manifest.origin
    else:
        files, size = _disk_usage(entry.data)
        origin = holder_of(entry.lock).get("origin")
    return EntryReport(
        level=level,
        name=entry.name,
        origin=origin,
        files=files,
        bytes=size,
        complete=manifest is not None,
        path=entry.data,
    )


def clean(
    config: CacheConfig, pattern: str | None, levels: Iterable[LevelName]
) -> tuple[list[EntryReport], list[EntryReport]]:
    """Remove the entries of ``levels`` whose name, origin or origin's last component match
    the glob ``pattern`` (all when None). Returns (removed, busy): an entry another process
    is filling is left alone."""
    wanted = set(levels)
    removed: list[EntryReport] = []
    busy: list[EntryReport] = []
    for item in report(config):
        if item.level not in wanted or not _matches(item, pattern):
            continue
        entry = Entry(config.levels()[item.level], item.name)
        with try_locked(entry.lock) as held:
            if not held:
                busy.append(item)
                continue
            entry.manifest.unlink(missing_ok=True)
            entry.journal.unlink(missing_ok=True)
            shutil.rmtree(entry.data, ignore_errors=True)
            entry.lock.unlink(missing_ok=True)
        removed.append(item)
    return removed, busy


def _entry_names(level: Path) -> list[str]:
    if not level.is_dir():
        return []
    names: set[str] = set()
    for path in level.iterdir():
        if path.name.startswith("."):
            continue  # the locks, and temporary files of atomic writes
        for suffix in (".entry.json", ".journal"):
            if path.name.endswith(suffix):
                names.add(path.name[: -len(suffix)])
                break
        else:
            if path.is_dir():
                names.add(path.name)
    return sorted(names)


def _disk_usage(root: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                size += Path(folder, name).stat().st_size
                files += 1
    return files, size


def _matches(item: EntryReport, pattern: str | None) -> bool:
    if pattern is None:
        return True
    candidates = [item.name, item.origin or "", basename(item.origin or "")]
    return any(fnmatch.fnmatchcase(text, pattern) for text in candidates if text)
