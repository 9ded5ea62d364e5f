"""Filling one entry of one level: under the entry's lock, fetch what the listing names that
the entry lacks, each file to a temporary name, checked and renamed into place, then write the
manifest. Files already there are kept when they still are what their record says.

Owns what to fetch and the order of the steps that make a fill resumable; must not choose the
levels or the source (``cache``), nor know the manifest's format (``manifest``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blocktrain.core.atomic import atomic_path
from blocktrain.data.cache.config import Entry, Verify
from blocktrain.data.cache.locks import exclusive
from blocktrain.data.cache.manifest import (
    SHARED,
    FileRecord,
    Journal,
    Manifest,
    known_records,
    read_manifest,
    write_manifest,
)
from blocktrain.data.integrity import file_md5
from blocktrain.data.memory import format_size
from blocktrain.data.objects import Listing, ObjectInfo, Storage
from blocktrain.data.parallel import map_parallel

_log = logging.getLogger("blocktrain.data")


@dataclass(frozen=True, slots=True)
class Job:
    """One level's entry for one origin, and how to fill it."""

    entry: Entry
    origin: str
    storage: Storage
    verify: Verify
    durable: bool = False  # sync each file: worth it on the persistent level only


def ensure(job: Job, listing: Callable[[], Listing], refresh: bool) -> Manifest:
    """The entry's manifest once the entry is complete and intact, filling it if need be."""
    if not refresh and (manifest := intact(job.entry, job.origin, job.verify)) is not None:
        return manifest
    with exclusive(job.entry.lock, job.origin):
        if not refresh and (manifest := intact(job.entry, job.origin, job.verify)) is not None:
            return manifest  # another process completed it while this one waited
        return _fill(job, listing())


def intact(entry: Entry, origin: str, verify: Verify) -> Manifest | None:
    """The manifest, when present and every file is as it recorded."""
    manifest = read_manifest(entry)
    if manifest is None or manifest.origin != origin:
        return None
    for name, record in manifest.files.items():
        path = entry.data / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if stat.st_size != record.size or stat.st_mtime_ns != record.mtime_ns:
            return None
        if verify == "full" and file_md5(path) != record.md5:
            return None
    return manifest


def _fill(job: Job, listing: Listing) -> Manifest:
    """Bring the entry to what ``listing`` says, reusing intact files; write the manifest."""
    entry = job.entry
    known = known_records(entry, job.origin)
    entry.manifest.unlink(missing_ok=True)  # incomplete from here until the new manifest
    entry.data.mkdir(parents=True, exist_ok=True)
    _remove_strays(entry.data, {info.name for info in listing.objects})
    records = _kept(job, listing, known)
    todo = [info for info in listing.objects if info.name not in records]
    if todo:
        records.update(_fetch(job, listing, todo, records))
    manifest = Manifest(
        origin=job.origin,
        source=listing.source,
        kind="file" if listing.is_file else "dir",
        files={info.name: records[info.name] for info in listing.objects},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    write_manifest(entry, manifest)
    entry.journal.unlink(missing_ok=True)
    return manifest


def _kept(job: Job, listing: Listing, known: dict[str, FileRecord]) -> dict[str, FileRecord]:
    """The records of the listed files already in place and intact."""

    def reuse(info: ObjectInfo) -> FileRecord | None:
        return _reusable(job.entry.data / info.name, info, known.get(info.name), job.verify)

    candidates = [info for info in listing.objects if info.name in known]
    kept = map_parallel(reuse, candidates, job.storage.concurrency)  # may hash: worth threads
    return {
        info.name: record
        for info, record in zip(candidates, kept, strict=True)
        if record is not None
    }


def _fetch(
    job: Job, listing: Listing, todo: list[ObjectInfo], kept: dict[str, FileRecord]
) -> dict[str, FileRecord]:
    """Fetch ``todo`` in parallel, journaling each placed file (and the ``kept`` ones, so
    that they survive a failure too); returns the records of the fetched files."""
    data = job.entry.data
    size = format_size(sum(info.size for info in todo))
    _log.info("fetching %d files (%s) of %s into %s", len(todo), size, job.origin, data)
    with Journal(job.entry.journal, kept) as journal:

        def fetch(info: ObjectInfo) -> FileRecord:
            record = _place(job, data / info.name, listing.member(info.name), info)
            journal.add(info.name, record)
            return record

        fetched = map_parallel(fetch, todo, job.storage.concurrency)
    return {info.name: record for info, record in zip(todo, fetched, strict=True)}


def _place(job: Job, final: Path, uri: str, info: ObjectInfo) -> FileRecord:
    """Download to a temporary name beside ``final``, check it, rename it into place."""
    with atomic_path(final, SHARED, durable=job.durable) as temporary:
        md5 = job.storage.download(uri, temporary, info)
    return FileRecord(info.size, md5, info.etag, final.stat().st_mtime_ns)


def _reusable(
    path: Path, info: ObjectInfo, record: FileRecord | None, verify: Verify
) -> FileRecord | None:
    """The record of a local file that still is the listed object, else None (fetch it)."""
    if record is None or record.size != info.size:
        return None
    if info.etag and info.etag not in (record.etag, record.md5):
        return None  # the origin changed since this copy was made
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    if stat.st_size != record.size:
        return None
    if stat.st_mtime_ns == record.mtime_ns and verify == "stat":
        return record
    if file_md5(path) != record.md5:
        _log.warning("%s does not match its recorded checksum; fetching it again", path)
        return None
    return FileRecord(record.size, record.md5, record.etag, stat.st_mtime_ns)


def _remove_strays(root: Path, wanted: set[str]) -> None:
    """Delete files that are not in the listing: partial downloads, members since removed."""
    for folder, _, files in os.walk(root):
        for file in files:
            path = Path(folder, file)
            if path.relative_to(root).as_posix() not in wanted:
                path.unlink(missing_ok=True)
