"""Durable atomic writes and advisory file locks: the one implementation of each.

An atomic write goes to a temporary file beside its target, ``.NAME.XXXXXXXX.tmp`` (eight hex
digits), which is synced to disk, renamed over the target, and then the folder is synced: a
reader sees the old content or the new, never a torn file, and after a crash the disk holds the
one or the other. A crash can leave the temporary file behind; :func:`temporary_pattern`
recognizes such leftovers for whoever cleans them. Locks are ``flock`` on a lock file.

Must not decide where files go (``core.paths`` does), nor import torch, mlflow or anything of
blocktrain but its errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
from collections.abc import Callable, Generator
from pathlib import Path
from typing import IO

PRIVATE = 0o600


def temporary_pattern(names: str) -> re.Pattern[str]:
    """Matches the temporary files of atomic writes to targets whose names match ``names`` (a
    regular expression): the leftovers a crash during such a write can leave."""
    return re.compile(rf"\.(?:{names})\.[0-9a-f]{{8}}\.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, mode: int | None = None, *, durable: bool = True) -> Generator[Path]:
    """A new empty file beside ``path``, for writers that open a file by name: renamed over
    ``path`` when the block ends, removed when it raises.

    The file is private to its owner (0600) unless ``mode`` is given; then it is created with
    that mode less the umask, as a folder shared by several users needs. ``durable`` syncs the
    file before the rename and the folder after it; leave it on unless the folder does not
    outlive the process that writes it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    os.close(os.open(temporary, flags, PRIVATE if mode is None else mode))
    try:
        yield temporary
        if durable:
            _fsync(temporary)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent)


@contextlib.contextmanager
def atomic_output(path: Path, mode: int | None = None) -> Generator[IO[bytes]]:
    """:func:`atomic_path` for writers that take a file: the temporary file open for writing
    (its ``name`` is its path), flushed, synced and renamed over ``path`` when the block ends."""
    with atomic_path(path, mode) as temporary, temporary.open("wb") as file:
        yield file
        file.flush()


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` by ``data`` durably, with :func:`atomic_output`'s ``mode``."""
    with atomic_output(path, mode) as file:
        file.write(data)


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode)


FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_text_or_overwrite(path: Path, text: str, last_word: str) -> bool:
    """``text`` atomically; on a full disk (or quota), ``last_word`` over the existing file in
    place instead, when it fits in the blocks the file already holds. False when neither could
    be written.

    For small state files that must say how a job ended even when the disk it fills is theirs:
    a rewrite in place needs no new block on file systems that overwrite in place (ext4, XFS,
    tmpfs; not copy-on-write ones such as btrfs), though a reader may catch it half written.
    """
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        if exc.errno not in FULL_DISK:
            return False
    else:
        return True
    data = last_word.encode()
    try:
        with path.open("r+b") as file:
            if len(data) > os.fstat(file.fileno()).st_blocks * 512:
                return False
            file.write(data)
            file.truncate()
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _lock_file(path: Path) -> Generator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0666 less the umask: in a shared folder the other users must be able to lock it too.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        yield fd  # closing the descriptor releases the lock
    finally:
        os.close(fd)


def _lock_now(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _still_at(fd: int, path: Path) -> bool:
    """Whether the open lock file is still the one at ``path`` (a cleaner may remove it)."""
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def locked(path: Path, on_wait: Callable[[], object] | None = None) -> Generator[int]:
    """An exclusive advisory lock on ``path`` (created if missing) for the block's duration;
    yields the lock file's descriptor, to record the holder in it.

    ``on_wait`` is called before waiting for another holder. A lock file that its holder
    removed (to clean up) is not held: the lock is taken on the file now at ``path``.
    """
    while True:
        with _lock_file(path) as fd:
            if not _lock_now(fd):
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_at(fd, path):
                yield fd
                return


@contextlib.contextmanager
def try_locked(path: Path) -> Generator[bool]:
    """The lock of :func:`locked` if nobody holds it: True inside the block, else False."""
    with _lock_file(path) as fd:
        yield _lock_now(fd) and _still_at(fd, path)
