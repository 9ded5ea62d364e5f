"""The two-level dataset cache: :func:`localize` makes a file or prefix local, once.

Level one, ``DATA_PATH``, is persistent and may be shared by many jobs (a project folder on the
cluster's shared file system); level two, ``DATA_EPHEMERAL_PATH``, is node-local and lives as
long as the job (``$SLURM_TMPDIR``). An S3 source is downloaded into level one and copied from
there into level two; a local source is copied into level two only.

Each level holds, per source, an entry ``NAME/`` (the files), ``NAME.entry.json`` (the
manifest: size, MD5, ETag and modification time of every file, written last, so its presence
marks the entry complete), ``NAME.journal`` (files placed so far, while an entry fills) and
``.locks/NAME.lock``. Files arrive under a temporary name, are checked against the size and
ETag the listing gave, and are renamed into place; an interrupted fill resumes from its
journal. Filling holds an exclusive ``flock`` on the entry's lock file, so N ranks on a node or
N jobs on a shared cache download once while the others wait and then read. A complete entry
is checked without a lock: every file must still have the size and modification time the
manifest recorded (``verify="full"`` also recomputes each MD5); one that does not is hashed
and fetched again if its content changed.

The parts: ``config`` (levels and entry paths), ``manifest`` (the manifest and journal
files), ``locks`` (an entry's lock), ``fill`` (filling one entry), ``reports`` (sizes and
cleaning). This module chooses the levels and the source for :func:`localize`; it must not
fetch or lock by itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from blocktrain.data.cache.config import CacheConfig, Entry, LevelName, Verify
from blocktrain.data.cache.fill import Job, ensure
from blocktrain.data.cache.manifest import listing_of, read_manifest
from blocktrain.data.cache.reports import EntryReport, clean, report
from blocktrain.data.localfs import LocalStorage
from blocktrain.data.names import entry_name, is_s3, normalize_source, tiny_variant
from blocktrain.data.objects import Listing, SourceNotFoundError, Storage
from blocktrain.data.storage import storage_for

__all__ = [
    "CacheConfig",
    "Entry",
    "EntryReport",
    "LevelName",
    "Verify",
    "clean",
    "localize",
    "report",
]
_log = logging.getLogger("blocktrain.data")


def localize(
    source: str | Path,
    *,
    config: CacheConfig | None = None,
    storage: Storage | None = None,
    verify: Verify | None = None,
    dev: bool | None = None,
    refresh: bool = False,
) -> Path:
    """The local path of ``source`` (``s3://bucket/key`` or a path; a file or a folder),
    downloaded or copied through the cache levels the first time.

    Args:
        source: an S3 object or prefix, or a local file or folder.
        config: the cache levels; default read from the environment
            (:meth:`CacheConfig.from_environ`).
        storage: the storage to fetch ``source`` from; default :func:`storage_for`.
        verify: "stat" (sizes and modification times) or "full" (also each MD5).
        dev: prefer the ``-tiny`` variant of ``source`` where it exists (default:
            ``BLOCKTRAIN_DATA_DEV``).
        refresh: list the source again and fetch what changed, even for a complete entry.
    """
    config = config or CacheConfig.from_environ(os.environ)
    check = verify or config.verify
    origin = normalize_source(source)
    storage = storage or storage_for(origin)
    if config.dev if dev is None else dev:
        origin = _prefer_tiny(origin, storage, config)
    name = entry_name(origin)
    if not is_s3(origin):
        if not storage.exists(origin):
            raise SourceNotFoundError(f"{origin} does not exist; check the path")
        if config.ephemeral is None:
            return Path(origin)
        local = Job(Entry(config.ephemeral, name), origin, storage, check)
        return _localized(local, lambda: storage.list(origin), refresh)
    persistent = Job(Entry(config.persistent, name), origin, storage, check, durable=True)
    if config.ephemeral is None:
        return _localized(persistent, lambda: storage.list(origin), refresh)

    def from_persistent() -> Listing:
        manifest = ensure(persistent, lambda: storage.list(origin), refresh)
        return listing_of(persistent.entry, manifest)

    ephemeral = Job(Entry(config.ephemeral, name), origin, LocalStorage(), check)
    return _localized(ephemeral, from_persistent, refresh)


def _localized(job: Job, listing: Callable[[], Listing], refresh: bool) -> Path:
    return ensure(job, listing, refresh).path_in(job.entry)


def _prefer_tiny(origin: str, storage: Storage, config: CacheConfig) -> str:
    """Development mode: the ``-tiny`` variant when the cache or the storage has it."""
    tiny = tiny_variant(origin)
    if tiny is None:
        return origin
    name = entry_name(tiny)
    cached = any(read_manifest(Entry(level, name)) for level in config.levels().values())
    if cached or storage.exists(tiny):
        _log.info("development mode: using %s instead of %s", tiny, origin)
        return tiny
    _log.warning("development mode: %s does not exist; using %s", tiny, origin)
    return origin
