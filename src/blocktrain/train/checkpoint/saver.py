"""Writing a training's checkpoints: rank 0 writes, in the background when it may.

An asynchronous save costs the training thread one copy of the state into CPU memory
(reused buffers, pinned for GPU tensors); a background thread then writes the file
atomically with its checksum (:func:`blocktrain.train.checkpoint.files.save`), records the best one,
deletes all but the last K and the best, and queues the last and the best for upload to the
MLflow run. CPU tensors that only the next optimizer step changes (the parameters and the
optimizer's state: ``late``) are copied by the background thread too, while the next forward
and backward passes run; :meth:`Checkpointer.before_update` waits for those copies.

One write is in flight at a time: the next save waits for it, and so does
:meth:`Checkpointer.close`. A write that failed raises in the training thread at the next
save or at close.

Must not: know the file format (that is :mod:`blocktrain.train.checkpoint.files`), or decide
to stop or requeue (that is :mod:`blocktrain.restart`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist

from blocktrain import track
from blocktrain.core import envvars
from blocktrain.core.atomic import write_text_atomic
from blocktrain.errors import BlocktrainError
from blocktrain.train.checkpoint import files as checkpoint
from blocktrain.train.checkpoint.files import CheckpointConfig

if TYPE_CHECKING:
    from blocktrain.track import Tracker

UPLOAD_DIR = "upload"


def default_folder(env: Mapping[str, str] | None = None) -> Path:
    """Where a run keeps its checkpoints, keyed by the run so that a resume finds them.

    ``$BLOCKTRAIN_CHECKPOINT_DIR`` (slurm-launch sets it per run); else, inside a tracked
    call, ``.blocktrain/runs/<run id>/checkpoints`` in the project, where slurm-launch would
    put them; else ``./checkpoints``. Under torch.distributed rank 0's answer is every rank's
    (only rank 0 knows a run it has just created): call it on every rank.
    """
    environ = os.environ if env is None else env
    configured = environ.get(envvars.CHECKPOINT_DIR.name)
    if configured:
        return Path(configured)
    folder = Path("checkpoints")
    tracker = track.current()
    if tracker is not None and tracker.run_id is not None:
        from blocktrain.core.paths import Layout

        folder = Layout(tracker.config.root).checkpoints(tracker.run_id)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        shared: list[object] = [str(folder)]
        dist.broadcast_object_list(shared, src=0)
        folder = Path(str(shared[0]))
    return folder


Late = list[tuple[torch.Tensor, torch.Tensor]]
"""(buffer, tensor) pairs: copies left to the background thread."""


def snapshot(
    state: Any,  # noqa: ANN401
    buffers: dict[str, torch.Tensor],
    late: frozenset[int] = frozenset(),
) -> tuple[Any, Late]:
    """A copy of ``state`` whose tensors live in CPU memory the training no longer touches.

    Tensors are copied into ``buffers`` (kept between calls, so that memory is allocated
    once; pinned for GPU tensors, whose copies then run asynchronously until the final
    synchronisation); other values are copied as containers, leaves shared. CPU tensors whose
    storage is in ``late`` (addresses) are not copied yet: they are returned with their
    buffers, for the caller to copy before anything changes them.
    """
    pending: Late = []
    copied = _copy(state, buffers, "", late, pending)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return copied, pending


def storage_address(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _copy(
    value: Any,  # noqa: ANN401
    buffers: dict[str, torch.Tensor],
    key: str,
    late: frozenset[int],
    pending: Late,
) -> Any:  # noqa: ANN401
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        buffer = _buffer(tensor, buffers, key)
        if not tensor.is_cuda and storage_address(tensor) in late:
            pending.append((buffer, tensor))
            return buffer
        return buffer.copy_(tensor, non_blocking=tensor.is_cuda)
    if isinstance(value, Mapping):
        items = cast("Mapping[Any, Any]", value)
        return {k: _copy(v, buffers, f"{key}/{k}", late, pending) for k, v in items.items()}
    if isinstance(value, list | tuple):
        parts = [
            _copy(v, buffers, f"{key}/{i}", late, pending)
            for i, v in enumerate(cast("list[Any]", value))
        ]
        return parts if isinstance(value, list) else tuple(parts)
    return value


def _buffer(tensor: torch.Tensor, buffers: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    buffer = buffers.get(key)
    if buffer is None or (buffer.shape, buffer.dtype) != (tensor.shape, tensor.dtype):
        pinned = tensor.is_cuda
        buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pinned)
        buffers[key] = buffer
    return buffer


@dataclass(frozen=True, slots=True)
class Best:
    """The monitored metric's value that makes a checkpoint the best so far."""

    monitor: str
    value: float


class Checkpointer:
    """Saves and finds one training's checkpoints (see the module docstring).

    Every rank keeps the schedule (:meth:`due`, :meth:`saved`); only the ``writer`` (rank 0)
    touches files.
    """

    def __init__(self, config: CheckpointConfig, *, writer: bool, tracker: Tracker | None) -> None:
        self.config = config
        self.folder = config.folder
        self._writer = writer
        self._tracker = tracker if config.upload else None
        self._thread: threading.Thread | None = None
        self._failure: tuple[int, BaseException] | None = None
        self._buffers: dict[str, torch.Tensor] = {}
        self._copied: threading.Event | None = None
        self.last_step = 0
        self.last_time = time.monotonic()
        self.stall_s = 0.0
        """seconds the training thread spent in the last :meth:`save`"""
        if writer:
            checkpoint.remove_leftovers(self.folder)

    def newest(self) -> Path | None:
        """The newest good checkpoint to resume from."""
        return checkpoint.newest_good(self.folder)

    def due_by_steps(self, step: int) -> bool:
        """Whether ``every_steps`` steps have passed since the last save."""
        return self.config.due_by_steps(step, self.last_step)

    def due_by_clock(self, now: float) -> bool:
        """Whether ``every_minutes`` have passed since the last save, by this rank's clock."""
        return self.config.due_by_clock(now, self.last_time)

    def saved(self, step: int, now: float | None = None) -> None:
        """Restart the interval at ``step`` (after a save, or a resume from it)."""
        self.last_step = step
        self.last_time = time.monotonic() if now is None else now

    def save(
        self,
        state: Mapping[str, Any],
        step: int,
        *,
        best: Best | None = None,
        wait: bool = False,
        late: frozenset[int] = frozenset(),
    ) -> None:
        """Checkpoint ``state`` as ``step``; with ``wait``, return once it is on disk.

        Call it on every rank; the others only note the step. ``late``: storage addresses
        (:func:`storage_address`) of CPU tensors that nothing changes before the caller calls
        :meth:`before_update` (the parameters and optimizer state, until the next optimizer
        step); the background thread copies them.
        """
        started = time.perf_counter()
        self.saved(step)
        if self._writer:
            self.wait()
            if wait or not self.config.asynchronous:
                self._write(state, step, best)
            else:
                copy, pending = snapshot(state, self._buffers, late)
                copied = threading.Event() if pending else None
                self._copied = copied
                self._thread = threading.Thread(
                    target=self._write_in_background,
                    args=(copy, pending, copied, step, best),
                    name="blocktrain-checkpoint",
                    daemon=True,
                )
                self._thread.start()
        self.stall_s = time.perf_counter() - started

    def before_update(self) -> None:
        """Wait until the ``late`` tensors of the last save are copied: call it before they
        change (the optimizer step). The time waited counts in :attr:`stall_s`."""
        copied, self._copied = self._copied, None
        if copied is not None and not copied.is_set():
            started = time.perf_counter()
            copied.wait()
            self.stall_s += time.perf_counter() - started

    @property
    def busy(self) -> bool:
        """Whether a background write is in flight."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the write in flight is done; raise if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            step, exc = self._failure
            self._failure = None
            raise BlocktrainError(
                f"checkpoint of step {step} could not be written to {self.folder} ({exc}); "
                "free space or fix the folder's permissions, then resume"
            ) from exc

    close = wait

    def best(self) -> Path | None:
        """The best checkpoint recorded so far, if any."""
        return checkpoint.best(self.folder)

    def _write_in_background(
        self,
        state: Mapping[str, Any],
        pending: Late,
        copied: threading.Event | None,
        step: int,
        best: Best | None,
    ) -> None:
        try:
            try:
                for buffer, tensor in pending:
                    buffer.copy_(tensor)
            finally:
                if copied is not None:
                    copied.set()
            self._write(state, step, best)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread
            self._failure = (step, exc)

    def _write(self, state: Mapping[str, Any], step: int, best: Best | None) -> None:
        path = checkpoint.save(state, self.folder, step)
        if best is not None and self.config.keep_best:
            checkpoint.mark_best(path, best.monitor, best.value)
            self._upload(path, "best")
        self._upload(path, "last")
        kept = [p for p in [checkpoint.recorded_best(self.folder)] if p is not None]
        checkpoint.prune(self.folder, self.config.keep_last, keep=kept)

    def _upload(self, path: Path, kind: str) -> None:
        """Queue ``checkpoints/<kind>/<kind>.pt`` (and its checksum) for the run's artifacts.

        Each upload gets a folder of its own, ``upload/<kind>-<time>/``, holding a hard link
        (no extra space) that pins the file's content whatever pruning does meanwhile. Only
        the two newest folders of a kind stay: an upload still queued for an older one finds
        nothing and is skipped, so a slow store receives the newest checkpoint, not a backlog.
        """
        if self._tracker is None:
            return
        uploads = self.folder / UPLOAD_DIR
        staging = uploads / f"{kind}-{time.time_ns()}"
        staging.mkdir(parents=True)
        try:
            os.link(path, staging / f"{kind}.pt")
        except OSError:  # a file system without hard links: a copy does the same job
            shutil.copyfile(path, staging / f"{kind}.pt")
        digest = checkpoint.sidecar_path(path).read_text().split()[0]
        write_text_atomic(checkpoint.sidecar_path(staging / f"{kind}.pt"), f"{digest}  {kind}.pt\n")
        self._tracker.log_artifacts(staging, f"checkpoints/{kind}")
        for old in sorted(uploads.glob(f"{kind}-*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)


def resume_state(path: Path) -> dict[str, Any]:
    """Load a checkpoint the engine wrote, naming the file when it is not one."""
    state = checkpoint.load(path)
    missing = {"model", "optimizer", "progress"} - set(state)
    if missing:
        raise BlocktrainError(
            f"checkpoint {path} lacks {', '.join(sorted(missing))}: it was not written by the "
            "training engine; move it out of the checkpoint folder"
        )
    return state
