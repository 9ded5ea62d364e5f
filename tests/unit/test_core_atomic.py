"""Atomic writes and locks of ``blocktrain.core.atomic``: complete content or the old file,
never a temporary file left by a failure, the requested permissions, the file and its folder
synced in that order, crash leftovers recognizable, and locks that exclude each other."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from blocktrain.core.atomic import (
    atomic_output,
    atomic_path,
    locked,
    temporary_pattern,
    try_locked,
    write_bytes_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_write_is_complete_and_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "record.json"
    write_text_atomic(target, "old\n")
    payload = os.urandom(3 << 20)  # several buffers' worth
    write_bytes_atomic(target, payload)
    assert target.read_bytes() == payload
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    temporaries: list[Path] = []

    def write_half() -> None:
        with atomic_output(target) as file:
            file.write(b"half of the new")
            temporaries.append(Path(file.name))
            raise RuntimeError("writer broke")

    with pytest.raises(RuntimeError, match="writer broke"):
        write_half()
    assert target.read_text() == "old"
    assert temporaries[0].parent == tmp_path
    assert not temporaries[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_failing_writer_by_name_leaves_no_target(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"

    def transfer() -> None:
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"partial")
            raise OSError("transfer broke")

    with pytest.raises(OSError, match="transfer broke"):
        transfer()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("umask_022")
def test_files_are_private_unless_a_mode_is_given(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "private", "x")
    write_text_atomic(tmp_path / "shared", "x", mode=0o666)
    write_text_atomic(tmp_path / "group", "x", mode=0o640)
    with atomic_path(tmp_path / "by-name", 0o666) as temporary:
        temporary.write_bytes(b"x")  # reopening keeps the mode it was created with
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"private": 0o600, "shared": 0o644, "group": 0o640, "by-name": 0o644}


def record_fsyncs(monkeypatch: pytest.MonkeyPatch, target: Path) -> list[tuple[int, bool, bytes]]:
    """Each fsync as (inode, is a folder, what ``target`` held at that moment)."""
    calls: list[tuple[int, bool, bytes]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        calls.append((info.st_ino, stat.S_ISDIR(info.st_mode), target.read_bytes()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_the_file_is_synced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    calls = record_fsyncs(monkeypatch, target)
    write_bytes_atomic(target, b"new")
    file_inode, folder_inode = target.stat().st_ino, tmp_path.stat().st_ino
    assert (file_inode, False, b"old") in calls  # the new bytes on disk before they replace
    assert (folder_inode, True, b"new") in calls  # the rename on disk after it happened
    assert calls.index((file_inode, False, b"old")) < calls.index((folder_inode, True, b"new"))


def test_a_write_that_need_not_outlive_the_job_is_not_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "scratch.bin"
    target.write_bytes(b"old")
    calls = record_fsyncs(monkeypatch, target)
    with atomic_path(target, durable=False) as temporary:
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert calls == []


def crash_while_writing(target: str) -> None:
    with atomic_output(Path(target)) as file:
        file.write(b"half")
        file.flush()
        os._exit(3)  # a killed process: no exception handler runs


def test_a_crash_leaves_a_temporary_that_the_pattern_finds(tmp_path: Path) -> None:
    target = tmp_path / "step-000000042.pt"
    target.write_bytes(b"old")
    child = multiprocessing.get_context("fork").Process(
        target=crash_while_writing, args=(str(target),)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 3
    assert target.read_bytes() == b"old"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1
    assert temporary_pattern(r"step-\d{9}\.pt").fullmatch(leftovers[0])
    assert not temporary_pattern(r"step-\d{9}\.pt").fullmatch(target.name)
    assert not temporary_pattern(r"best\.json").fullmatch(leftovers[0])


def test_a_held_lock_excludes_others_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "entry.lock"
    waited: list[bool] = []
    with locked(lock), try_locked(lock) as held:
        assert held is False
    with try_locked(lock) as held:
        assert held is True
        with try_locked(lock) as again:
            assert again is False
    with locked(lock, on_wait=lambda: waited.append(True)):
        pass
    assert waited == []


def wait_for_lock(lock: str, marks: str, go: Event) -> None:
    go.wait(30)
    log = Path(marks)
    with locked(Path(lock), on_wait=lambda: log.write_text("waiting\n")), log.open("a") as out:
        out.write("inside\n")


def test_a_waiter_is_told_and_gets_the_lock_when_the_holder_lets_go(tmp_path: Path) -> None:
    lock, marks = tmp_path / "entry.lock", tmp_path / "marks"
    context = multiprocessing.get_context("fork")
    go = context.Event()
    # Forked before the lock is taken: a child would inherit the holder's descriptor.
    child = context.Process(target=wait_for_lock, args=(str(lock), str(marks), go))
    child.start()
    with locked(lock):
        go.set()
        deadline = time.monotonic() + 30
        while not marks.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert marks.read_text() == "waiting\n"
    child.join(30)
    assert child.exitcode == 0
    assert marks.read_text() == "waiting\ninside\n"
