"""The restart protocol in a Lightning Trainer: poll at step boundaries, checkpoint, requeue.

:class:`Restartable` does for ``L.Trainer`` what blocktrain's own Trainer does in its loop:

- at each optimizer step (``on_train_batch_end`` once ``global_step`` moved: never in the middle
  of gradient accumulation) every rank says whether it was signalled, in an all-reduce that
  starts at one step and is read at the next, so that no rank waits for it;
- when the ranks agree to stop, all of them save a checkpoint through the Trainer (rank 0
  writes it, atomically, into the run's checkpoint folder) and, at the next hook (once
  Lightning has logged the step's metrics), :func:`blocktrain.restart.stop_now` leaves the
  attempt: a requeue within the profile's budget, ``slurm-stop``'s end, or the end of a spent
  budget. At the last step of an epoch it waits for the next step, after the epoch's end and
  its validation, which Lightning would skip when resuming from that step;
- checkpoints every ``every_steps`` steps or ``every_minutes`` minutes too, and when training
  ends; the last ``keep_last`` stay;
- every rank's random generators go into the checkpoint and come back when training starts
  again, after Lightning made its data iterators, so that the resumed steps draw what the
  uninterrupted ones drew;
- Lightning's own SIGTERM handler is taken out once Lightning installs it (it records the
  signal, broadcasts from inside the handler, and ends the process with exit code 1):
  blocktrain's handlers decide.

It is a ``Checkpoint`` callback, so Lightning adds no default ``ModelCheckpoint`` of its own
(which writes outside the run's folder) and orders it after the user's checkpoint callbacks.

Must not: requeue or talk to Slurm (:mod:`blocktrain.restart` does), or log metrics.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint
from typing_extensions import override

from blocktrain import distributed, restart
from blocktrain.core import checkpointfiles
from blocktrain.distributed import Reduction
from blocktrain.errors import BlocktrainError
from blocktrain.lightning.data import DataLoader
from blocktrain.lightning.plugins import DurableCheckpointIO
from blocktrain.train.checkpoint import files
from blocktrain.train.checkpoint.saver import default_folder


def gathered_rng_states() -> list[dict[str, Any]]:
    """Every rank's random generator states, in rank order (a collective under DDP)."""
    mine = files.rng_state()
    _, world = distributed.rank_and_world()
    if world == 1:
        return [mine]
    import torch.distributed as dist

    states: list[object] = [None] * world
    dist.all_gather_object(states, mine)
    return [dict(state) for state in states if isinstance(state, dict)]  # pyright: ignore[reportUnknownArgumentType]


def own_rng_state(states: list[dict[str, Any]]) -> dict[str, Any]:
    """This rank's entry of :func:`gathered_rng_states`; refuses another number of ranks."""
    rank, world = distributed.rank_and_world()
    if len(states) != world:
        raise BlocktrainError(
            f"the checkpoint was saved by {len(states)} ranks, this attempt has {world}: resume"
            " with the profile's nodes and tasks_per_node of the run"
        )
    return states[rank]


def _loaders(value: object) -> Iterator[object]:
    if isinstance(value, Mapping):
        for item in value.values():  # pyright: ignore[reportUnknownVariableType]
            yield from _loaders(item)  # pyright: ignore[reportUnknownArgumentType]
    elif isinstance(value, list | tuple):
        for item in value:  # pyright: ignore[reportUnknownVariableType]
            yield from _loaders(item)  # pyright: ignore[reportUnknownArgumentType]
    elif value is not None:
        yield value


class Restartable(Checkpoint):
    """blocktrain's restarts and durable checkpoints for ``L.Trainer``
    (:func:`blocktrain.lightning.trainer` adds it; see the module docstring)."""

    def __init__(
        self,
        *,
        folder: Path | None = None,
        every_steps: int | None = None,
        every_minutes: float | None = None,
        keep_last: int = 2,
    ) -> None:
        if every_steps is not None and every_steps <= 0:
            raise ValueError(f"every_steps must be a positive integer, got {every_steps}")
        if every_minutes is not None and not every_minutes > 0:
            raise ValueError(f"every_minutes must be a positive number, got {every_minutes}")
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        self._folder = folder
        self.every_steps, self.every_minutes, self.keep_last = every_steps, every_minutes, keep_last
        self._handlers: dict[signal.Signals, Any] = {}
        self._rng_to_restore: dict[str, Any] | None = None
        self._pending: Reduction | None = None
        self._carried = (False, False)  # (stop, checkpoint due) agreed at an epoch's last step
        self._leaving = False  # saved for a stop: leave at the next hook
        self._polled_step = -1
        self._saved_step = -1
        self._saved_at = time.monotonic()

    @property
    def folder(self) -> Path:
        """The run's checkpoint folder (known once ``fit`` has started)."""
        if self._folder is None:
            raise RuntimeError("the folder is known once trainer.fit has started")
        return self._folder

    @property
    @override
    def state_key(self) -> str:
        return "blocktrain.Restartable"

    # -- set-up ------------------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(trainer.strategy.checkpoint_io, DurableCheckpointIO):
            raise BlocktrainError(
                "the Trainer writes checkpoints with "
                f"{type(trainer.strategy.checkpoint_io).__name__}, not atomically: build it with "
                "blocktrain.lightning.trainer(...)"
            )
        if self._folder is None:
            self._folder = default_folder()  # a collective: every rank is here
        if threading.current_thread() is threading.main_thread():
            # What blocktrain's worker installed, before Lightning puts its own in front.
            self._handlers = {signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
        self._saved_at = time.monotonic()

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here: Lightning knows which checkpoint it restores only once setup() has run.
        newest = checkpointfiles.newest_good(self.folder)
        chosen = trainer.ckpt_path
        if newest is not None and (chosen is None or Path(chosen).resolve() != newest.resolve()):
            raise BlocktrainError(
                f"the run has a checkpoint ({newest}) but trainer.fit resumes from "
                f"{chosen or 'none'}: pass ckpt_path=blocktrain.lightning.resume_path() to "
                "trainer.fit"
            )
        if newest is not None and trainer.is_global_zero:
            sys.stderr.write(f"blocktrain: resuming from {newest}\n")

    def _reclaim_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._handlers.items():
            if handler is not None:
                signal.signal(signum, handler)

    @override
    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reclaim_signals()

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reclaim_signals()
        for loader in _loaders(trainer.train_dataloader):
            if not isinstance(loader, DataLoader):
                raise BlocktrainError(
                    f"the training data comes from a {type(loader).__name__}, whose position a "
                    "checkpoint cannot hold: use blocktrain.lightning.DataLoader (same arguments)"
                )
            loader.roll_over_finished_pass()
        self._polled_step = self._saved_step = trainer.global_step
        if self._rng_to_restore is not None:
            # Here, not when the checkpoint is read: Lightning has made the epoch's iterator by
            # now, and the uninterrupted run had drawn nothing for it since this state either.
            files.set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    # -- the step boundary -------------------------------------------------------------------

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step == self._polled_step:
            return  # no optimizer step since the last boundary (gradients accumulating)
        self._polled_step = step
        stop, clock_due = self._poll()
        self._carried = (self._carried[0] or stop, self._carried[1] or clock_due)
        if batch_idx + 1 >= trainer.num_training_batches:
            # The epoch's last step: Lightning resumes from it past the epoch's end, without the
            # validation that follows it. So the epoch ends first, and the next step acts.
            return
        (stop, clock_due), self._carried = self._carried, (False, False)
        if stop:
            self.save(trainer)
            # Leave at the next hook: Lightning logs this step's metrics after this one.
            self._leaving = True
            return
        if clock_due or (
            self.every_steps is not None and step - self._saved_step >= self.every_steps
        ):
            self.save(trainer)

    def _leave_if_stopping(self) -> None:
        if self._leaving:
            self._leaving = False
            restart.stop_now()

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._leave_if_stopping()

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._leave_if_stopping()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._leave_if_stopping()

    def _poll(self) -> tuple[bool, bool]:
        """What the ranks agreed at the previous boundary; starts the next agreement."""
        agreed = self._pending.result() if self._pending is not None else None
        flags = [float(restart.signalled()), float(self._clock_due())]
        self._pending = Reduction(torch.tensor(flags), "max")
        if agreed is None:
            return False, False
        return bool(agreed[0].item()), bool(agreed[1].item())

    def _clock_due(self) -> bool:
        minutes = self.every_minutes
        return minutes is not None and time.monotonic() - self._saved_at >= minutes * 60

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._leave_if_stopping()
        if self._pending is not None:
            self._pending.result()  # every rank started it; none leaves it running
            self._pending = None
        if trainer.global_step != self._saved_step:
            self.save(trainer)

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, trainer: pl.Trainer) -> Path:
        """Checkpoint now, on every rank (rank 0 writes), and prune the folder."""
        path = checkpointfiles.checkpoint_path(self.folder, trainer.global_step)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            files.prune(self.folder, self.keep_last)
        self._saved_step, self._saved_at = trainer.global_step, time.monotonic()
        return path

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"rng": gathered_rng_states()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = own_rng_state(state_dict["rng"])
