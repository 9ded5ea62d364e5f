"""Which checkpoint files can be trusted: their names and their checksum files, without torch.

A checkpoint is ``folder/step-000000042.pt`` beside ``step-000000042.pt.sha256`` (in
``sha256sum`` format); it is good only when its checksum file exists and matches. The trainer
resumes from :func:`newest_good` and names what :func:`skipped` lists; ``slurm-launch
--run-id`` refuses a relaunch that could only start from step 0. Writing them is
:mod:`blocktrain.train.checkpoint.files`'s (with torch).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

NAME = re.compile(r"step-(\d{9,})\.pt")
NAME_OR_SIDECAR = re.compile(r"step-(\d{9,})\.pt(?:\.sha256)?")


def checkpoint_path(folder: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` goes."""
    return folder / f"step-{step:09d}.pt"


def sidecar_path(checkpoint: Path) -> Path:
    """The checksum file that vouches for ``checkpoint``."""
    return checkpoint.with_name(checkpoint.name + ".sha256")


def sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def problem(path: Path) -> str | None:
    """Why ``path`` is not a good checkpoint, or None when it is."""
    sidecar = sidecar_path(path)
    try:
        if not path.is_file():
            return "does not exist"
        if not sidecar.is_file():
            return f"has no checksum file {sidecar.name} (it was never completely saved)"
        fields = sidecar.read_bytes().split()
        if not fields or fields[0].decode("ascii", "replace") != sha256(path):
            return f"does not match the checksum in {sidecar.name} (truncated or corrupt)"
    except OSError as exc:
        return f"cannot be read ({exc})"
    return None


def is_good(path: Path) -> bool:
    """Whether ``path`` exists and matches its checksum file; never raises."""
    return problem(path) is None


def names(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in folder.iterdir()]
    except OSError:
        return []


def numbered(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the files named like checkpoints, oldest first; [] for no folder."""
    matches = (NAME.fullmatch(name) for name in names(folder))
    return sorted((int(m.group(1)), folder / m.group(0)) for m in matches if m)


def newest_good(folder: Path) -> Path | None:
    """The checkpoint with the highest step that is good, or None (also for no folder).

    Truncated or corrupt files, files without a checksum and leftover temporary files are
    skipped; unreadable entries are treated as bad, never raised.
    """
    for _, path in reversed(numbered(folder)):
        if is_good(path):
            return path
    return None


def skipped(folder: Path) -> list[tuple[Path, str]]:
    """The checkpoints newer than the newest good one, newest first, each with why it cannot
    be loaded: what a resume passes over, and must say it does."""
    passed: list[tuple[Path, str]] = []
    for _, path in reversed(numbered(folder)):
        why = problem(path)
        if why is None:
            break
        passed.append((path, why))
    return passed
