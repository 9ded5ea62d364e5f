"""Atomic checkpoints that a crashed or requeued job can trust, and when to write them.

A checkpoint is ``folder/step-000000042.pt`` beside ``step-000000042.pt.sha256`` (in
``sha256sum`` format, so ``sha256sum -c`` checks it by hand). Both are written to a temporary
file in the same folder, synced and renamed into place, the checksum first; a checkpoint is
good only when its checksum file exists and matches. A crash at any moment therefore leaves
either a good checkpoint or something :func:`newest_good` skips. ``folder/best.json`` names
the checkpoint with the best monitored metric (:func:`mark_best`, :func:`best`).

torch (and numpy) are imported when a function needs them, not with the module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from blocktrain.core import checkpointfiles as _files
from blocktrain.core.atomic import atomic_path, temporary_pattern, write_text_atomic
from blocktrain.errors import BlocktrainError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    _NumpyState = tuple[str, NDArray[np.uint32], int, int, float]

_Patch = Callable[[dict[str, bool]], AbstractContextManager[object]]
_LEFTOVER = temporary_pattern(r"step-\d{9,}\.pt(?:\.sha256)?|best\.json")
_NAME = _files.NAME
_NAME_OR_SIDECAR = _files.NAME_OR_SIDECAR
_names, _checkpoints, _problem = _files.names, _files.numbered, _files.problem
# Which files can be trusted is decided without torch, in core, where slurm-launch reads it too.
checkpoint_path = _files.checkpoint_path
sidecar_path = _files.sidecar_path
is_good = _files.is_good
newest_good = _files.newest_good
skipped = _files.skipped
_UMASK_DECIDES = 0o666  # checkpoints get the permissions of any file the user writes
BEST_FILE = "best.json"


def save(state: Mapping[str, Any], folder: Path, step: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically; return its path.

    Call it from one rank (rank 0): the others wait at a barrier and then find the file with
    :func:`newest_good`.
    """
    return save_as(state, checkpoint_path(folder, step))


def save_as(state: Mapping[str, Any], final: Path) -> Path:
    """Write ``state`` to ``final`` and its checksum file atomically, as :func:`save` does, under
    a name of the caller's (another library's checkpoint names); return ``final``."""
    with atomic_path(final, _UMASK_DECIDES) as temporary:
        with temporary.open("wb") as file:
            digest = _save_hashing(state, file)
        line = f"{digest}  {final.name}\n"
        # Synced with its folder before the checkpoint it vouches for is renamed into place.
        write_text_atomic(sidecar_path(final), line, _UMASK_DECIDES)
    return final


class _HashingWriter:
    """A file that hashes what it is given on its way to the disk: the checksum costs no
    second read of a file that may be larger than the page cache."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.digest = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        # A buffered file writes all of ``data``, as torch expects; a raw one may write part.
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


def _save_hashing(state: Mapping[str, Any], file: BinaryIO) -> str:
    """torch.save ``state`` into the buffered ``file``; return the SHA-256 of what it wrote."""
    import torch

    writer = _HashingWriter(file)
    with _without_crc32():
        torch.save(dict(state), cast("IO[bytes]", writer))  # it calls write and flush only
    return writer.digest.hexdigest()


def _without_crc32() -> AbstractContextManager[object]:
    """torch's per-record CRC-32 off where torch has the setting: the SHA-256 vouches for the
    whole file, torch.load does not check the CRC, and computing it takes about a third of the
    CPU time of serialising. torch's patched settings are per thread in the locked version; in
    versions where they are per process, a torch.save elsewhere meanwhile also skips the CRC,
    which its reader does not miss."""
    try:
        from torch.utils.serialization import config
    except ImportError:
        return contextlib.nullcontext()
    patch = cast("_Patch | None", getattr(config, "patch", None))  # set up at import by torch
    if patch is None or getattr(config.save, "compute_crc32", None) is None:
        return contextlib.nullcontext()
    return patch({"save.compute_crc32": False})


def load(path: Path, map_location: str = "cpu", *, weights_only: bool = True) -> dict[str, Any]:
    """Read a checkpoint after checking it against its checksum.

    ``weights_only`` is torch's safe unpickler (tensors, containers, numbers, strings); pass
    False only for checkpoints you trust that hold other objects. Raises
    :class:`~blocktrain.errors.BlocktrainError` naming the file when it is not good.
    """
    problem = _problem(path)
    if problem is not None:
        raise BlocktrainError(
            f"checkpoint {path} {problem}; resume from checkpoint.newest_good(folder) instead"
        )
    import torch

    state = torch.load(path, map_location=map_location, weights_only=weights_only)
    if not isinstance(state, dict):
        raise BlocktrainError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return cast(dict[str, Any], state)


def prune(folder: Path, keep_last: int, keep: Iterable[Path] = ()) -> list[Path]:
    """Delete checkpoints (and checksum files) older than the last ``keep_last`` complete ones.

    Complete means having a checksum file (not re-hashed here: :func:`save` has just written
    the newest); anything newer than the oldest of those stays, and so does every path in
    ``keep`` (such as the best checkpoint). Returns the deleted paths.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be 0 or more, got {keep_last}")
    complete = [step for step, path in _checkpoints(folder) if sidecar_path(path).is_file()]
    if keep_last == 0:
        cutoff = None
    elif len(complete) >= keep_last:
        cutoff = complete[-keep_last]
    else:
        return []
    kept = {path.resolve() for path in keep}
    removed: list[Path] = []
    for name in sorted(_names(folder)):  # a checkpoint sorts before its checksum file
        match = _NAME_OR_SIDECAR.fullmatch(name)
        if match is None or (cutoff is not None and int(match.group(1)) >= cutoff):
            continue
        if (folder / f"step-{match.group(1)}.pt").resolve() not in kept:
            (folder / name).unlink(missing_ok=True)
            removed.append(folder / name)
    return removed


def mark_best(checkpoint: Path, monitor: str, value: float) -> None:
    """Record ``checkpoint`` (already saved) as the best one of its folder, atomically."""
    folder = checkpoint.parent
    record = {"file": checkpoint.name, "monitor": monitor, "value": value}
    write_text_atomic(folder / BEST_FILE, json.dumps(record) + "\n", _UMASK_DECIDES)


def best(folder: Path) -> Path | None:
    """The checkpoint :func:`mark_best` recorded, if it is still good; None otherwise."""
    path = recorded_best(folder)
    return path if path is not None and is_good(path) else None


def recorded_best(folder: Path) -> Path | None:
    """The checkpoint :func:`mark_best` recorded, not checked against its checksum (which
    reads the whole file): enough to know what pruning must keep."""
    try:
        record = json.loads((folder / BEST_FILE).read_text())
        path = folder / str(record["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if _NAME.fullmatch(path.name) else None


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temporary files of saves that a crash interrupted; returns them.

    Call it only while nothing saves into ``folder`` (at the start of a job, on rank 0).
    """
    removed: list[Path] = []
    for name in _names(folder):
        if _LEFTOVER.fullmatch(name):
            (folder / name).unlink(missing_ok=True)
            removed.append(folder / name)
    return removed


def rng_state() -> dict[str, Any]:
    """The state of Python's, numpy's (when installed), torch's and CUDA's (when available)
    random generators, in types that :func:`load` reads with ``weights_only``.

    Each rank has its own generators: save every rank's state, or reseed per rank on resume.
    """
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        legacy = cast("_NumpyState", np.random.get_state(legacy=True))
        name, keys, pos, has_gauss, gauss = legacy
        state["numpy"] = (name, keys.tolist(), pos, has_gauss, gauss)
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (numpy and CUDA parts only where present here)."""
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            pass
        else:
            name, keys, pos, has_gauss, gauss = state["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointConfig:
    """Where checkpoints go, how often they are written and how many stay.

    A checkpoint is due when either interval has passed since the last one; times are in
    seconds from one clock (``time.monotonic()``: start it afresh after a restart).
    """

    folder: Path
    every_steps: int | None = None
    every_minutes: float | None = None
    keep_last: int = 3
    keep_best: bool = True
    """also keep the checkpoint with the best monitored validation metric"""
    asynchronous: bool = True
    """copy the state to CPU memory and write it from a background thread"""
    upload: bool = True
    """copy the last and the best checkpoint to the MLflow run's artifacts, in the background"""

    def __post_init__(self) -> None:
        if self.every_steps is None and self.every_minutes is None:
            raise ValueError("CheckpointConfig needs every_steps or every_minutes (or both)")
        if self.every_steps is not None and self.every_steps <= 0:
            raise ValueError(f"every_steps must be a positive integer, got {self.every_steps}")
        if self.every_minutes is not None and not self.every_minutes > 0:
            raise ValueError(f"every_minutes must be a positive number, got {self.every_minutes}")
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {self.keep_last}")

    def due(self, step: int, last_save_step: int, last_save_time: float, now: float) -> bool:
        """Whether to checkpoint after ``step``, given the step and time of the last save."""
        return step > last_save_step and (
            self.due_by_steps(step, last_save_step) or self.due_by_clock(now, last_save_time)
        )

    def due_by_steps(self, step: int, last_save_step: int) -> bool:
        """Whether ``every_steps`` steps have passed since the last save."""
        return self.every_steps is not None and step - last_save_step >= self.every_steps

    def due_by_clock(self, now: float, last_save_time: float) -> bool:
        """Whether ``every_minutes`` have passed since the last save (clocks of ranks differ:
        under torch.distributed the ranks must agree on it, see ``blocktrain.train.exchange``)."""
        return self.every_minutes is not None and now - last_save_time >= self.every_minutes * 60
