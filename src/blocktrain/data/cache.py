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
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, cast

from blocktrain.core.files import write_text_atomic
from blocktrain.data.integrity import file_md5
from blocktrain.data.memory import format_size
from blocktrain.data.names import (
    basename,
    entry_name,
    is_s3,
    normalize_source,
    tiny_variant,
)
from blocktrain.data.parallel import map_parallel
from blocktrain.data.storage import (
    Listing,
    LocalStorage,
    ObjectInfo,
    SourceNotFoundError,
    Storage,
    storage_for,
)
from blocktrain.errors import BlocktrainError

Verify = Literal["stat", "full"]
LevelName = Literal["persistent", "ephemeral"]
MANIFEST_FORMAT = 1
_log = logging.getLogger("blocktrain.data")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheConfig:
    """Where the two levels are and how entries are checked; see :meth:`from_environ`."""

    persistent: Path
    ephemeral: Path | None = None
    dev: bool = False
    verify: Verify = "stat"

    def __post_init__(self) -> None:
        if self.verify not in ("stat", "full"):
            raise BlocktrainError(f"cache verify must be 'stat' or 'full', not {self.verify!r}")

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> CacheConfig:
        """``DATA_PATH`` (default ``$XDG_CACHE_HOME/blocktrain/data``), ``DATA_EPHEMERAL_PATH``
        (unset: one level), ``BLOCKTRAIN_DATA_DEV`` and ``BLOCKTRAIN_DATA_VERIFY``."""
        cache_home = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        persistent = env.get("DATA_PATH") or str(Path(cache_home) / "blocktrain" / "data")
        ephemeral = env.get("DATA_EPHEMERAL_PATH") or None
        verify = env.get("BLOCKTRAIN_DATA_VERIFY", "").strip() or "stat"
        if verify not in ("stat", "full"):
            raise BlocktrainError(f"BLOCKTRAIN_DATA_VERIFY={verify!r} must be 'stat' or 'full'")
        return cls(
            persistent=Path(persistent).expanduser(),
            ephemeral=Path(ephemeral).expanduser() if ephemeral else None,
            dev=env.get("BLOCKTRAIN_DATA_DEV", "").strip().lower() in _TRUE,
            verify=verify,
        )

    def levels(self) -> dict[LevelName, Path]:
        found: dict[LevelName, Path] = {"persistent": self.persistent}
        if self.ephemeral is not None:
            found["ephemeral"] = self.ephemeral
        return found


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


@dataclass(frozen=True, slots=True)
class Entry:
    """The paths of one source's entry in one level."""

    level: Path
    name: str

    @property
    def data(self) -> Path:
        return self.level / self.name

    @property
    def manifest(self) -> Path:
        return self.level / f"{self.name}.entry.json"

    @property
    def journal(self) -> Path:
        return self.level / f"{self.name}.journal"

    @property
    def lock(self) -> Path:
        return self.level / ".locks" / f"{self.name}.lock"

    def result(self, manifest: Manifest) -> Path:
        """What :func:`localize` returns: the folder, or the single file in it."""
        if manifest.kind == "file":
            return self.data / next(iter(manifest.files))
        return self.data


@dataclass(frozen=True, slots=True)
class _Job:
    """One level's entry for one origin, and how to fill it."""

    entry: Entry
    origin: str
    storage: Storage
    verify: Verify
    durable: bool = False  # fsync each file: worth it on the persistent level only


# --- public API ---------------------------------------------------------------------------


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
        local = _Job(Entry(config.ephemeral, name), origin, storage, check)
        return local.entry.result(_ensure(local, lambda: storage.list(origin), refresh))
    persistent = _Job(Entry(config.persistent, name), origin, storage, check, durable=True)
    if config.ephemeral is None:
        return persistent.entry.result(_ensure(persistent, lambda: storage.list(origin), refresh))

    def from_persistent() -> Listing:
        manifest = _ensure(persistent, lambda: storage.list(origin), refresh)
        return _listing_of(persistent.entry, manifest)

    ephemeral = _Job(Entry(config.ephemeral, name), origin, LocalStorage(), check)
    return ephemeral.entry.result(_ensure(ephemeral, from_persistent, refresh))


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
    found: list[EntryReport] = []
    for level_name, level in config.levels().items():
        for name in _entry_names(level):
            entry = Entry(level, name)
            manifest = _read_manifest(entry)
            if manifest is not None:
                files, size = len(manifest.files), manifest.total_bytes
                origin: str | None = manifest.origin
            else:
                files, size = _disk_usage(entry.data)
                origin = _holder(entry.lock).get("origin")
            found.append(
                EntryReport(
                    level=level_name,
                    name=name,
                    origin=origin,
                    files=files,
                    bytes=size,
                    complete=manifest is not None,
                    path=entry.data,
                )
            )
    return found


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
        with _try_lock(entry.lock) as held:
            if not held:
                busy.append(item)
                continue
            entry.manifest.unlink(missing_ok=True)
            entry.journal.unlink(missing_ok=True)
            shutil.rmtree(entry.data, ignore_errors=True)
            entry.lock.unlink(missing_ok=True)
        removed.append(item)
    return removed, busy


# --- filling an entry ---------------------------------------------------------------------


def _ensure(job: _Job, listing: Callable[[], Listing], refresh: bool) -> Manifest:
    """The entry's manifest once the entry is complete and intact, filling it if need be."""
    if not refresh and (manifest := _intact(job.entry, job.origin, job.verify)) is not None:
        return manifest
    with _exclusive(job.entry.lock, job.origin):
        if not refresh and (manifest := _intact(job.entry, job.origin, job.verify)) is not None:
            return manifest  # another process completed it while this one waited
        return _fill(job, listing())


def _intact(entry: Entry, origin: str, verify: Verify) -> Manifest | None:
    """The manifest, when present and every file is as it recorded."""
    manifest = _read_manifest(entry)
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


def _fill(job: _Job, listing: Listing) -> Manifest:
    """Bring the entry to what ``listing`` says, reusing intact files; write the manifest."""
    entry = job.entry
    known = _known_records(entry, job.origin)
    entry.manifest.unlink(missing_ok=True)  # incomplete from here until the new manifest
    entry.data.mkdir(parents=True, exist_ok=True)
    _remove_strays(entry.data, {info.name for info in listing.objects})

    def reuse(info: ObjectInfo) -> FileRecord | None:
        return _reusable(entry.data / info.name, info, known.get(info.name), job.verify)

    workers = job.storage.concurrency
    candidates = [info for info in listing.objects if info.name in known]
    kept = map_parallel(reuse, candidates, workers)  # may hash: worth threads
    records = {
        info.name: record
        for info, record in zip(candidates, kept, strict=True)
        if record is not None
    }
    todo = [info for info in listing.objects if info.name not in records]
    if todo:
        _log.info(
            "fetching %d files (%s) of %s into %s",
            len(todo),
            format_size(sum(info.size for info in todo)),
            job.origin,
            entry.data,
        )
        with _Journal(entry.journal, records) as journal:  # kept files survive a failure too

            def fetch(info: ObjectInfo) -> FileRecord:
                record = _place(job, entry.data / info.name, listing.member(info.name), info)
                journal.add(info.name, record)
                return record

            fetched = map_parallel(fetch, todo, workers)
        records.update((info.name, record) for info, record in zip(todo, fetched, strict=True))
    manifest = Manifest(
        origin=job.origin,
        source=listing.source,
        kind="file" if listing.is_file else "dir",
        files={info.name: records[info.name] for info in listing.objects},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    _write_manifest(entry, manifest)
    entry.journal.unlink(missing_ok=True)
    return manifest


def _place(job: _Job, final: Path, uri: str, info: ObjectInfo) -> FileRecord:
    """Download to a temporary name beside ``final``, check it, rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
    try:
        md5 = job.storage.download(uri, temporary, info)
        if job.durable:
            with temporary.open("rb") as handle:
                os.fsync(handle.fileno())
        temporary.replace(final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
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


def _known_records(entry: Entry, origin: str) -> dict[str, FileRecord]:
    """Records of files placed earlier: the old manifest, then a journal left by a fill that
    was interrupted."""
    manifest = _read_manifest(entry)
    known = dict(manifest.files) if manifest is not None and manifest.origin == origin else {}
    with contextlib.suppress(FileNotFoundError):
        for line in entry.journal.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                item = json.loads(line)
                name = item.pop("name")
                known[name] = FileRecord(**item)
    return known


def _remove_strays(root: Path, wanted: set[str]) -> None:
    """Delete files that are not in the listing: partial downloads, members since removed."""
    for folder, _, files in os.walk(root):
        for file in files:
            path = Path(folder, file)
            if path.relative_to(root).as_posix() not in wanted:
                path.unlink(missing_ok=True)


class _Journal:
    """Records of the files an entry holds while it fills, shared by the fetching threads;
    begun afresh with the files kept from before, then appended to."""

    def __init__(self, path: Path, kept: Mapping[str, FileRecord]) -> None:
        self._lock = threading.Lock()
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        temporary.write_text("".join(self._line(name, record) for name, record in kept.items()))
        temporary.replace(path)
        self._handle = path.open("a")

    @staticmethod
    def _line(name: str, record: FileRecord) -> str:
        return json.dumps({"name": name, **asdict(record)}) + "\n"

    def __enter__(self) -> _Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def add(self, name: str, record: FileRecord) -> None:
        line = self._line(name, record)
        with self._lock:
            self._handle.write(line)
            self._handle.flush()


# --- manifests ----------------------------------------------------------------------------


def _read_manifest(entry: Entry) -> Manifest | None:
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


def _write_manifest(entry: Entry, manifest: Manifest) -> None:
    """Atomically and durably; readable by whoever may read the cache (the umask decides),
    since a shared cache serves several users."""
    data = {"format": MANIFEST_FORMAT, **asdict(manifest)}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_text_atomic(entry.manifest, text, mode=0o666)


def _listing_of(entry: Entry, manifest: Manifest) -> Listing:
    """A complete entry as a listing to copy from: each file with the MD5 it must have."""
    objects = tuple(
        ObjectInfo(name, record.size, record.md5) for name, record in manifest.files.items()
    )
    source = entry.result(manifest)
    return Listing(str(source), manifest.kind == "file", objects)


def _prefer_tiny(origin: str, storage: Storage, config: CacheConfig) -> str:
    """Development mode: the ``-tiny`` variant when the cache or the storage has it."""
    tiny = tiny_variant(origin)
    if tiny is None:
        return origin
    name = entry_name(tiny)
    cached = any(_read_manifest(Entry(level, name)) for level in config.levels().values())
    if cached or storage.exists(tiny):
        _log.info("development mode: using %s instead of %s", tiny, origin)
        return tiny
    _log.warning("development mode: %s does not exist; using %s", tiny, origin)
    return origin


# --- locks --------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(path: Path, origin: str) -> Generator[None]:
    """Hold the entry's lock, waiting for another holder (and saying so) when there is one."""
    while True:
        with _open_lock(path) as fd:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(path)
                _log.info(
                    "waiting for %s (pid %s on %s) to finish %s",
                    path.name,
                    holder.get("pid", "?"),
                    holder.get("host", "?"),
                    holder.get("origin", origin),
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not _same_file(fd, path):
                continue  # `clean` removed this lock file while we waited: lock the new one
            _write_holder(fd, origin)
            yield
            return


@contextlib.contextmanager
def _try_lock(path: Path) -> Generator[bool]:
    """The entry's lock if nobody holds it: True inside the block, else False."""
    with _open_lock(path) as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield _same_file(fd, path)


@contextlib.contextmanager
def _open_lock(path: Path) -> Generator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        yield fd  # closing the descriptor releases the lock
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _write_holder(fd: int, origin: str) -> None:
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "origin": origin}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)


def _holder(path: Path) -> dict[str, str]:
    """Who holds (or last held) a lock: host, pid, origin."""
    try:
        data: object = json.loads(path.read_text() or "{}")
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(key): str(value) for key, value in cast("dict[object, object]", data).items()}


# --- reports ------------------------------------------------------------------------------


def _entry_names(level: Path) -> list[str]:
    if not level.is_dir():
        return []
    names: set[str] = set()
    for path in level.iterdir():
        if path.name.startswith("."):
            continue
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
