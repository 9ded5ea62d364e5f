"""The two-level cache with storage on local files: completion marker written last, resumed
fills, corrupt and missing files fetched again, one download for many processes, locks,
development variants, reports and cleaning."""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from blocktrain.core.atomic import temporary_pattern
from blocktrain.data.cache import CacheConfig, Entry, clean, localize, report
from blocktrain.data.cache.locks import exclusive
from blocktrain.data.names import entry_name
from blocktrain.data.storage import Listing, LocalStorage, ObjectInfo, SourceNotFoundError
from blocktrain.errors import BlocktrainError

FILES = {
    f"{kind}/{i:02d}.txt": f"{kind} {i}\n".encode() * (i + 1) for kind in "ab" for i in range(6)
}


class FolderBucket(LocalStorage):
    """The storage protocol for ``s3://bucket/key`` served from ROOT/bucket/key: the S3 code
    paths of the cache (two levels, ETags) without a server; every download is logged."""

    concurrency = 4

    def __init__(self, root: Path, log: Path, delay: float = 0.0, fail_after: int = -1) -> None:
        self.root, self.log, self.delay, self.fail_after = root, log, delay, fail_after
        self.calls = 0

    def _path(self, uri: str) -> str:
        return str(self.root / uri.removeprefix("s3://"))

    def list(self, source: str) -> Listing:
        listing = super().list(self._path(source))
        objects = tuple(
            ObjectInfo(o.name, o.size, etag_of(Path(listing.member(o.name))))
            for o in listing.objects
        )
        return Listing(source, listing.is_file, objects)

    def exists(self, source: str) -> bool:
        return Path(self._path(source)).exists()

    def download(self, uri: str, dest: Path, expected: ObjectInfo | None = None) -> str:
        self.calls += 1
        if self.calls == self.fail_after:
            raise OSError("connection reset")
        with self.log.open("a") as out:
            out.write(f"{os.getpid()} {uri}\n")
        time.sleep(self.delay)
        return super().download(self._path(uri), dest, expected)


def etag_of(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    root = tmp_path / "bucket-root"
    for name, data in FILES.items():
        path = root / "datasets" / "ds" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def config(tmp_path: Path) -> CacheConfig:
    return CacheConfig(persistent=tmp_path / "shared", ephemeral=tmp_path / "node")


def downloads(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_two_levels_each_complete_with_a_manifest(
    bucket: Path, config: CacheConfig, tmp_path: Path
):
    storage = FolderBucket(bucket, tmp_path / "log")
    path = localize("s3://datasets/ds", config=config, storage=storage)
    name = entry_name("s3://datasets/ds")
    assert path == tmp_path / "node" / name
    assert contents(path) == contents(tmp_path / "shared" / name) == FILES
    assert len(downloads(tmp_path / "log")) == len(FILES)
    for level in ("shared", "node"):
        manifest = json.loads((tmp_path / level / f"{name}.entry.json").read_text())
        assert manifest["origin"] == "s3://datasets/ds"
        assert manifest["kind"] == "dir"
        assert set(manifest["files"]) == set(FILES)
        assert not (tmp_path / level / f"{name}.journal").exists()
    assert localize("s3://datasets/ds/", config=config, storage=storage) == path
    assert len(downloads(tmp_path / "log")) == len(FILES)
    single = localize("s3://datasets/ds/a/03.txt", config=config, storage=storage)
    assert single.name == "03.txt"
    assert single.read_bytes() == FILES["a/03.txt"]


def test_the_marker_is_written_after_every_file(bucket: Path, config: CacheConfig, tmp_path: Path):
    manifest = Entry(config.persistent, entry_name("s3://datasets/ds")).manifest
    seen: list[bool] = []

    class Watching(FolderBucket):
        def download(self, uri: str, dest: Path, expected: ObjectInfo | None = None) -> str:
            seen.append(manifest.exists())
            return super().download(uri, dest, expected)

    localize("s3://datasets/ds", config=CacheConfig(persistent=config.persistent),
             storage=Watching(bucket, tmp_path / "log"))  # fmt: skip
    assert seen == [False] * len(FILES)
    assert manifest.exists()


def test_an_interrupted_fill_has_no_marker_and_resumes(bucket: Path, tmp_path: Path):
    config = CacheConfig(persistent=tmp_path / "shared")
    failing = FolderBucket(bucket, tmp_path / "log", fail_after=5)
    failing.concurrency = 1
    with pytest.raises(OSError, match="connection reset"):
        localize("s3://datasets/ds", config=config, storage=failing)
    entry = Entry(config.persistent, entry_name("s3://datasets/ds"))
    assert not entry.manifest.exists()
    assert len(entry.journal.read_text().splitlines()) == 4
    assert not [p for p in entry.data.rglob(".*") if p.is_file()]  # no temporaries
    resumed = FolderBucket(bucket, tmp_path / "log2")
    path = localize("s3://datasets/ds", config=config, storage=resumed)
    assert contents(path) == FILES
    assert len(downloads(tmp_path / "log2")) == len(FILES) - 4


def localize_and_die_mid_file(root: str, log: str, shared: str) -> None:
    class Dying(FolderBucket):
        def download(self, uri: str, dest: Path, expected: ObjectInfo | None = None) -> str:
            if self.calls == 2:  # two files placed
                dest.write_bytes(b"half a file")
                os._exit(4)  # killed: no clean-up runs
            return super().download(uri, dest, expected)

    storage = Dying(Path(root), Path(log))
    storage.concurrency = 1
    localize("s3://datasets/ds", config=CacheConfig(persistent=Path(shared)), storage=storage)


def test_a_killed_fill_leaves_a_temporary_file_that_the_next_fill_removes(
    bucket: Path, tmp_path: Path
):
    args = (str(bucket), str(tmp_path / "log"), str(tmp_path / "shared"))
    child = multiprocessing.get_context("fork").Process(target=localize_and_die_mid_file, args=args)
    child.start()
    child.join(60)
    assert child.exitcode == 4
    entry = Entry(tmp_path / "shared", entry_name("s3://datasets/ds"))
    [leftover] = [p for p in entry.data.rglob(".*") if p.is_file()]
    assert temporary_pattern(r"\d\d\.txt").fullmatch(leftover.name)
    assert report(CacheConfig(persistent=tmp_path / "shared"))[0].complete is False
    config = CacheConfig(persistent=tmp_path / "shared")
    path = localize(
        "s3://datasets/ds", config=config, storage=FolderBucket(bucket, tmp_path / "l2")
    )
    assert contents(path) == FILES
    assert len(downloads(tmp_path / "l2")) == len(FILES) - 2


def test_corrupt_missing_and_stray_files_are_repaired(
    bucket: Path, config: CacheConfig, tmp_path: Path
):
    storage = FolderBucket(bucket, tmp_path / "log")
    path = localize("s3://datasets/ds", config=config, storage=storage)
    persistent = tmp_path / "shared" / path.name
    (path / "a" / "02.txt").write_bytes(b"A" * len(FILES["a/02.txt"]))  # same size
    (path / "b" / "05.txt").unlink()
    (path / "b" / "stray.txt").write_bytes(b"not in the dataset")
    (path / "b" / ".04.txt.1234abcd.tmp").write_bytes(b"half")
    before = len(downloads(tmp_path / "log"))
    assert localize("s3://datasets/ds", config=config, storage=storage) == path
    assert contents(path) == FILES
    assert len(downloads(tmp_path / "log")) == before  # repaired from the persistent level
    (persistent / "a" / "00.txt").write_bytes(b"x")  # corrupt the shared copy as well
    (path / "a" / "00.txt").write_bytes(b"y")
    localize("s3://datasets/ds", config=config, storage=storage)
    assert contents(path) == contents(persistent) == FILES
    assert downloads(tmp_path / "log")[before:] == [f"{os.getpid()} s3://datasets/ds/a/00.txt"]


def test_full_verification_finds_a_change_that_kept_the_modification_time(
    bucket: Path, tmp_path: Path
):
    config = CacheConfig(persistent=tmp_path / "shared")
    storage = FolderBucket(bucket, tmp_path / "log")
    path = localize("s3://datasets/ds", config=config, storage=storage)
    victim = path / "b" / "03.txt"
    stat = victim.stat()
    victim.write_bytes(b"Z" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    localize("s3://datasets/ds", config=config, storage=storage)  # stat: looks intact
    assert victim.read_bytes() != FILES["b/03.txt"]
    localize("s3://datasets/ds", config=config, storage=storage, verify="full")
    assert victim.read_bytes() == FILES["b/03.txt"]
    assert len(downloads(tmp_path / "log")) == len(FILES) + 1


def test_a_changed_origin_is_fetched_again_on_refresh(bucket: Path, tmp_path: Path):
    config = CacheConfig(persistent=tmp_path / "shared")
    storage = FolderBucket(bucket, tmp_path / "log")
    path = localize("s3://datasets/ds", config=config, storage=storage)
    (bucket / "datasets" / "ds" / "a" / "01.txt").write_bytes(b"new content")
    (bucket / "datasets" / "ds" / "a" / "new.txt").write_bytes(b"added")
    localize("s3://datasets/ds", config=config, storage=storage)
    assert (path / "a" / "01.txt").read_bytes() == FILES["a/01.txt"]  # offline: trusts its copy
    localize("s3://datasets/ds", config=config, storage=storage, refresh=True)
    assert (path / "a" / "01.txt").read_bytes() == b"new content"
    assert (path / "a" / "new.txt").read_bytes() == b"added"
    assert len(downloads(tmp_path / "log")) == len(FILES) + 2


def localize_in_child(root: str, log: str, shared: str, node: str, start: float) -> None:
    logging.basicConfig(level=logging.INFO)
    time.sleep(max(0.0, start - time.time()))
    config = CacheConfig(persistent=Path(shared), ephemeral=Path(node))
    path = localize(
        "s3://datasets/ds", config=config, storage=FolderBucket(Path(root), Path(log), delay=0.01)
    )
    assert contents(path) == FILES


def test_many_processes_download_once(bucket: Path, tmp_path: Path):
    context = multiprocessing.get_context("fork")
    start = time.time() + 0.5
    args = (
        str(bucket),
        str(tmp_path / "log"),
        str(tmp_path / "shared"),
        str(tmp_path / "node"),
        start,
    )
    children = [context.Process(target=localize_in_child, args=args) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    lines = downloads(tmp_path / "log")
    assert len(lines) == len(FILES)
    assert len({line.split()[0] for line in lines}) == 1  # one process fetched, three waited


def test_a_waiter_follows_a_lock_file_that_clean_replaced(tmp_path: Path):
    lock = tmp_path / ".locks" / "x.lock"
    lock.parent.mkdir()
    holder = lock.open("a")
    fcntl.flock(holder, fcntl.LOCK_EX)
    inside: list[bool] = []

    def wait() -> None:
        with exclusive(lock, "origin"):
            inside.append(json.loads(lock.read_text())["pid"] == os.getpid())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    assert not inside
    lock.unlink()  # what clean does while it holds the lock
    holder.close()
    thread.join(10)
    assert inside == [True]


def test_clean_leaves_an_entry_in_use_alone(bucket: Path, config: CacheConfig, tmp_path: Path):
    storage = FolderBucket(bucket, tmp_path / "log")
    localize("s3://datasets/ds", config=config, storage=storage)
    entry = Entry(config.persistent, entry_name("s3://datasets/ds"))
    with exclusive(entry.lock, "s3://datasets/ds"):
        removed, busy = clean(config, "ds", ["persistent", "ephemeral"])
    assert [(item.level, item.complete) for item in removed] == [("ephemeral", True)]
    assert [item.level for item in busy] == ["persistent"]
    assert entry.manifest.exists()
    removed, busy = clean(config, "s3://datasets/*", ["persistent"])
    assert [item.origin for item in removed] == ["s3://datasets/ds"]
    assert not busy
    assert not entry.data.exists()
    assert not entry.manifest.exists()
    assert report(config) == []


def test_report_counts_complete_and_partial_entries(
    bucket: Path, config: CacheConfig, tmp_path: Path
):
    failing = FolderBucket(bucket, tmp_path / "log", fail_after=3)
    failing.concurrency = 1
    with pytest.raises(OSError, match="connection reset"):
        localize("s3://datasets/ds/a", config=config, storage=failing)
    localize("s3://datasets/ds/b", config=config, storage=FolderBucket(bucket, tmp_path / "log"))
    found = {(item.level, item.origin): item for item in report(config)}
    complete = found["persistent", "s3://datasets/ds/b"]
    assert complete.complete
    assert complete.files == 6
    assert complete.bytes == sum(len(v) for k, v in FILES.items() if k.startswith("b/"))
    partial = found["persistent", "s3://datasets/ds/a"]
    assert not partial.complete
    assert partial.files == 2
    assert found["ephemeral", "s3://datasets/ds/b"].complete


def test_development_mode_picks_the_tiny_variant(
    bucket: Path, config: CacheConfig, tmp_path: Path, caplog
):
    storage = FolderBucket(bucket, tmp_path / "log")
    tiny = bucket / "datasets" / "ds-tiny" / "a"
    tiny.mkdir(parents=True)
    (tiny / "only.txt").write_bytes(b"tiny")
    path = localize("s3://datasets/ds", config=config, storage=storage, dev=True)
    assert contents(path) == {"a/only.txt": b"tiny"}
    with caplog.at_level(logging.WARNING, logger="blocktrain.data"):
        full = localize("s3://datasets/ds/a", config=config, storage=storage, dev=True)
    assert "ds/a-tiny does not exist; using s3://datasets/ds/a" in caplog.text
    assert (full / "00.txt").exists()


def test_local_sources_are_copied_to_the_node_level_only(bucket: Path, tmp_path: Path):
    source = bucket / "datasets" / "ds"
    assert localize(source, config=CacheConfig(persistent=tmp_path / "shared")) == source
    config = CacheConfig(persistent=tmp_path / "shared", ephemeral=tmp_path / "node")
    path = localize(source, config=config)
    assert path.parent == tmp_path / "node"
    assert contents(path) == FILES
    assert not (tmp_path / "shared").exists()
    with pytest.raises(SourceNotFoundError, match="nope does not exist"):
        localize(tmp_path / "nope", config=config)


def test_configuration_from_the_environment(tmp_path: Path):
    env = {"DATA_PATH": str(tmp_path / "p"), "DATA_EPHEMERAL_PATH": str(tmp_path / "e"),
           "BLOCKTRAIN_DATA_DEV": "yes", "BLOCKTRAIN_DATA_VERIFY": "full"}  # fmt: skip
    config = CacheConfig.from_environ(env)
    assert config == CacheConfig(
        persistent=tmp_path / "p", ephemeral=tmp_path / "e", dev=True, verify="full"
    )
    default = CacheConfig.from_environ({"XDG_CACHE_HOME": str(tmp_path)})
    assert default.persistent == tmp_path / "blocktrain" / "data"
    assert default.ephemeral is None
    with pytest.raises(BlocktrainError, match="BLOCKTRAIN_DATA_VERIFY='md5' must be"):
        CacheConfig.from_environ({"BLOCKTRAIN_DATA_VERIFY": "md5"})


def test_level_paths_take_variables_from_the_tasks_environment(tmp_path: Path):
    """One profile for every node: each task's own SLURM_TMPDIR makes its node's level."""
    env = {
        "DATA_PATH": "${PROJECT}/cache",
        "DATA_EPHEMERAL_PATH": "$SLURM_TMPDIR/data",
        "PROJECT": str(tmp_path / "shared"),
        "SLURM_TMPDIR": str(tmp_path / "node2" / "17"),
    }
    config = CacheConfig.from_environ(env)
    assert config.persistent == tmp_path / "shared" / "cache"
    assert config.ephemeral == tmp_path / "node2" / "17" / "data"
    outside = {"DATA_PATH": str(tmp_path), "DATA_EPHEMERAL_PATH": "$SLURM_TMPDIR/data"}
    with pytest.raises(BlocktrainError, match=r"names \$SLURM_TMPDIR, which is not set here"):
        CacheConfig.from_environ(outside)


def test_a_failed_refresh_keeps_what_it_had(bucket: Path, tmp_path: Path):
    config = CacheConfig(persistent=tmp_path / "shared")
    localize("s3://datasets/ds", config=config, storage=FolderBucket(bucket, tmp_path / "log"))
    (bucket / "datasets" / "ds" / "a" / "01.txt").write_bytes(b"changed")
    (bucket / "datasets" / "ds" / "a" / "02.txt").write_bytes(b"changed too")
    failing = FolderBucket(bucket, tmp_path / "log2", fail_after=2)
    failing.concurrency = 1
    with pytest.raises(OSError, match="connection reset"):
        localize("s3://datasets/ds", config=config, storage=failing, refresh=True)
    again = FolderBucket(bucket, tmp_path / "log3")
    path = localize("s3://datasets/ds", config=config, storage=again)
    assert (path / "a" / "02.txt").read_bytes() == b"changed too"
    assert len(downloads(tmp_path / "log3")) == 1  # only the file the failed refresh missed
