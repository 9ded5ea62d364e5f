"""The restart protocol in a Fabric loop: resume, poll at step boundaries, checkpoint, requeue.

A Fabric loop is the user's own, so :class:`Restarts` is called from it, as way A of
docs/porting.md calls :mod:`blocktrain.restart`: :meth:`Restarts.resume` once before the loop
(it fills the state dict from the run's newest good checkpoint, every rank's random generators
included), :meth:`Restarts.step` after each optimizer step. ``state`` is the dict
``fabric.save`` takes: the model, the optimizer, a :class:`blocktrain.lightning.DataLoader`
(its position in the epoch) and the loop's own counters, which Fabric writes back into the
dict on load.

Must not: requeue or talk to Slurm (:mod:`blocktrain.restart` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import torch

from blocktrain import restart
from blocktrain.core import checkpointfiles
from blocktrain.distributed import Reduction
from blocktrain.lightning.callback import gathered_rng_states, own_rng_state
from blocktrain.train.checkpoint import files
from blocktrain.train.checkpoint.saver import default_folder

RNG_KEY = "blocktrain_rng"


class Restarts:
    """blocktrain's restarts for a Fabric loop over ``state`` (see the module docstring)."""

    def __init__(
        self,
        fabric: L.Fabric,
        state: dict[str, Any],
        *,
        folder: Path | None = None,
        every_steps: int | None = None,
        keep_last: int = 2,
    ) -> None:
        self.fabric, self.state = fabric, state
        self.folder = folder if folder is not None else default_folder()
        self.every_steps, self.keep_last = every_steps, keep_last
        self.step_count = 0
        self._saved_step = 0
        self._pending: Reduction | None = None

    def resume(self) -> bool:
        """Load the newest good checkpoint into ``state``; False when there is none."""
        newest = checkpointfiles.newest_good(self.folder)
        if newest is None:
            return False
        remainder = self.fabric.load(newest, self.state)
        self.step_count = self._saved_step = int(remainder.pop("blocktrain_step"))
        files.set_rng_state(own_rng_state(remainder.pop(RNG_KEY)))
        if self.fabric.is_global_zero:
            self.fabric.print(f"blocktrain: resumed from {newest}")
        return True

    def step(self) -> None:
        """After an optimizer step, on every rank: checkpoint when due; when the ranks agree to
        stop, checkpoint and leave the attempt (:func:`blocktrain.restart.stop_now` raises)."""
        self.step_count += 1
        agreed = self._pending.result() if self._pending is not None else None
        self._pending = Reduction(torch.tensor([float(restart.signalled())]), "max")
        if agreed is not None and bool(agreed[0].item()):
            self.save()
            restart.stop_now()
        if self.every_steps is not None and self.step_count - self._saved_step >= self.every_steps:
            self.save()

    def finish(self) -> None:
        """After the loop, on every rank: the last checkpoint (a requeue after the loop, during
        an export, resumes here and trains nothing again)."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if self.step_count != self._saved_step or checkpointfiles.newest_good(self.folder) is None:
            self.save()

    def save(self) -> Path:
        """Checkpoint ``state`` now, on every rank (rank 0 writes), and prune the folder."""
        path = checkpointfiles.checkpoint_path(self.folder, self.step_count)
        extra = {RNG_KEY: gathered_rng_states(), "blocktrain_step": self.step_count}
        self.fabric.save(path, {**self.state, **extra})
        if self.fabric.is_global_zero:
            files.prune(self.folder, self.keep_last)
        self._saved_step = self.step_count
        return path
