"""The training loop: a small :class:`Trainer` over plain PyTorch objects.

Read :meth:`Trainer.fit` top to bottom: resume (or seed), then epochs of optimizer steps, each
step followed by the step boundary (log, obey the restart protocol, checkpoint when due),
each epoch by an evaluation (best checkpoint, early stopping, epoch schedulers), and at the
end a last checkpoint and the exports. Every piece is a method a subclass can replace:
:meth:`Trainer.forward_loss` for models whose batches are not ``(inputs, targets)``, for one.

Under torch.distributed (every rank runs the same code) the model is wrapped in
DistributedDataParallel, each rank reads its share of every global batch, metrics are
reduced as sums and counts, and only rank 0 logs, prints and writes files.

Must not: write files itself (the checkpointer and :mod:`blocktrain.train.outputs` do), talk
to Slurm, or decide on requeues (the restart protocol, :mod:`blocktrain.restart`, does).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from blocktrain import distributed, restart, track
from blocktrain.core.values import JSON, to_jsonable
from blocktrain.errors import BlocktrainError
from blocktrain.train import batching, outputs
from blocktrain.train.checkpoint import files as checkpoint_files
from blocktrain.train.checkpoint.files import CheckpointConfig
from blocktrain.train.checkpoint.saver import Best, Checkpointer, resume_state, storage_address
from blocktrain.train.config import ExportConfig, TrainConfig
from blocktrain.train.device import (
    autocast,
    check_precision,
    compiled,
    data_parallel,
    default_device,
    grad_scaler,
    place,
    seed_everything,
)
from blocktrain.train.evaluation import Evaluation, evaluate_model
from blocktrain.train.exchange import Exchange, Point
from blocktrain.train.logbook import Logbook
from blocktrain.train.metrics import MetricFn, Totals
from blocktrain.train.progress import Display, format_values
from blocktrain.train.state import Progress

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from blocktrain.train.batching import Data
    from blocktrain.train.export import Exported

    LossFn = Callable[[Any, Any], torch.Tensor]
    Scheduler = LRScheduler | ReduceLROnPlateau

_log = logging.getLogger("blocktrain.train")
CHECKPOINT_FORMAT = 1
# However fast the steps, the ranks exchange (and agree on stopping) at least every so many.
_EXCHANGE_MAX_STEPS = 1000


class StepMark(NamedTuple):
    """The clock (``time.perf_counter()``) at an optimizer step: where an exchange started,
    and the pace of steps since then is measured from."""

    time: float
    step: int


class ExampleMark(NamedTuple):
    """The clock at the start of a log window, and the examples trained on by then: where the
    window's ``samples_per_s`` is measured from."""

    time: float
    examples: int


class Trainer:
    """Trains ``model`` with ``optimizer`` on ``loss_fn(outputs, targets)``; see :meth:`fit`.

    The model is moved to ``device`` (default: this process's GPU, else the CPU) in place, so
    an optimizer built from its parameters before stays valid. ``metrics`` maps names to
    per-example metric functions (see :mod:`blocktrain.train.metrics`); ``args`` (the entry
    function's resolved arguments) is stored in every checkpoint beside the configs.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        *,
        config: TrainConfig | None = None,
        scheduler: Scheduler | None = None,
        metrics: Mapping[str, MetricFn] | None = None,
        checkpoint: CheckpointConfig | None = None,
        export: ExportConfig | None = None,
        class_names: Sequence[str] | None = None,
        args: Mapping[str, JSON] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.rank, self.world = distributed.rank_and_world()
        self.device = device or default_device()
        check_precision(self.config.precision, self.device)
        self.model = place(model, self.device, channels_last=self.config.channels_last)
        # What the forward passes call: compiled and/or DDP-wrapped. Evaluation skips DDP,
        # whose forward is a collective; checkpoints save the bare self.model.
        self._eval_net = compiled(self.model, enabled=self.config.compile)
        self.net = self._eval_net if self.world == 1 else data_parallel(self._eval_net, self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loss_fn = loss_fn
        self.metrics = dict(metrics or {})
        self.export_config = export
        self.class_names = list(class_names) if class_names is not None else None
        self.args: dict[str, JSON] = dict(args or {})
        self.scaler = grad_scaler(self.device, self.config.precision)
        self.progress = Progress()
        self.tracker = track.current()
        self.logbook = Logbook(self.tracker, self.config.log_flush_seconds)
        self.checkpointer = (
            Checkpointer(checkpoint, writer=self.rank == 0, tracker=self.tracker)
            if checkpoint is not None
            else None
        )
        self.last_evaluation: Evaluation | None = None
        self.exported: Exported | None = None
        self._window = Totals(self.device)
        self._exchange = Exchange(self.world, self.device)
        self._last_exchange, self._next_exchange = StepMark(time.perf_counter(), 0), 0
        self._window_start = ExampleMark(time.perf_counter(), 0)
        self._display = Display(0, enabled=False)

    # ---- the loop -----------------------------------------------------------------------

    def fit(self, train_data: Data, val_data: Data | None = None) -> dict[str, float]:
        """Train for ``config.epochs`` (or ``max_steps``), resuming from the newest checkpoint.

        Returns the last validation metrics (empty without validation data). Raises what
        :func:`blocktrain.restart.stop_now` raises when the restart protocol stops the job,
        after the checkpoint is written.
        """
        if val_data is not None:
            self._check_monitor()
        last_step, display = self._begin(train_data)
        try:
            self._epochs(train_data, val_data, last_step, display)
            self._end(val_data, display)
        except BaseException:
            self._abandon()
            raise
        finally:
            self.logbook.flush()
            display.close()
        self._finish(val_data if val_data is not None else train_data)
        return self.last_evaluation.values if self.last_evaluation is not None else {}

    def _begin(self, train_data: Data) -> tuple[int, Display]:
        """Resume (or seed); the last step to train to, and the display that counts to it."""
        config = self.config
        resumed_from = self._start()
        state = self.progress
        per_epoch = self._steps_per_epoch(train_data)
        last_step = min(config.max_steps or per_epoch * config.epochs, per_epoch * config.epochs)
        self._display = display = Display(last_step, state.step, enabled=self.rank == 0)
        if resumed_from is not None:
            display.note(f"resumed from {resumed_from} (epoch {state.epoch}, step {state.step})")
            if self.tracker is not None and state.evaluated_at is not None:
                self.tracker.note_logged(state.evaluation, state.evaluated_at - 1)
        self._window_start = ExampleMark(time.perf_counter(), state.step * config.batch_size)
        self._last_exchange, self._next_exchange = StepMark(time.perf_counter(), state.step), 0
        return last_step, display

    def _epochs(
        self, train_data: Data, val_data: Data | None, last_step: int, display: Display
    ) -> None:
        """Epochs of steps, each followed by an evaluation when due and the epoch schedulers,
        until the last epoch, ``last_step`` or early stopping."""
        config, state = self.config, self.progress
        while state.epoch < config.epochs and not self._stalled():
            if not self._train_epoch(train_data, last_step, display):
                break  # max_steps came first
            state.epoch += 1
            state.position = 0
            if val_data is not None and state.epoch % config.eval_every_epochs == 0:
                self._evaluate_and_keep(val_data, display)
            self._epoch_scheduler_step()

    def _end(self, val_data: Data | None, display: Display) -> None:
        """The last values, an evaluation of the last step, and the last checkpoint, on disk."""
        self._report(self._exchange.flush())  # over: whatever it agrees, the end saves
        if val_data is not None and self.progress.evaluated_at != self.progress.step:
            self._evaluate_and_keep(val_data, display)
        self._save(wait=True)
        if self.checkpointer is not None:
            self.checkpointer.close()

    def _train_epoch(self, data: Data, last_step: int, display: Display) -> bool:
        """Optimizer steps over the rest of the epoch; False when ``last_step`` comes first."""
        state, accumulate = self.progress, self.config.grad_accum_steps
        total = batching.batches_per_epoch(data, self.config, self.world)
        batches = batching.train_batches(
            data,
            self.config,
            epoch=state.epoch,
            skip=state.position,
            rank=self.rank,
            world=self.world,
            pin_memory=self.device.type == "cuda",
        )
        self.net.train()
        while state.position < total and state.step < last_step:
            group = min(accumulate, total - state.position)
            for index in range(group):
                self.backward(next(batches), scale=1.0 / group, sync=index == group - 1)
            self.optimizer_step()
            state.position += group
            state.step += 1
            self._step_boundary(last_step, display)
        return state.position >= total

    def forward_loss(self, batch: Any) -> tuple[torch.Tensor, int]:  # noqa: ANN401
        """The loss of one micro-batch (on the device already) and its number of examples."""
        inputs, targets = batching.split_batch(batch)
        with autocast(self.device, self.config.precision):
            outputs = self.net(inputs)
            loss = self.loss_fn(outputs, targets)
        return loss, batching.batch_size_of(inputs)

    def backward(self, batch: Any, *, scale: float, sync: bool) -> None:  # noqa: ANN401
        """Add one micro-batch's gradients; DDP averages them over ranks only when ``sync``."""
        batch = batching.to_device(batch, self.device, channels_last=self.config.channels_last)
        net = self.net
        skip = net.no_sync() if isinstance(net, DistributedDataParallel) and not sync else None
        with skip or contextlib.nullcontext():
            loss, count = self.forward_loss(batch)
            scaled = loss * scale if scale != 1.0 else loss
            self.scaler.scale(scaled).backward()  # pyright: ignore[reportUnknownMemberType]
        self._window.add_mean("train_loss", loss, count)

    def optimizer_step(self) -> None:
        """Clip, step (through the fp16 gradient scaler), clear gradients, step-wise schedule."""
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        if self.checkpointer is not None:
            self.checkpointer.before_update()  # the last save's copies of what changes now
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self._steps_scheduler("step"):
            cast("LRScheduler", self.scheduler).step()

    def _step_boundary(self, last_step: int, display: Display) -> None:
        """After each optimizer step: log, then checkpoint when due or when asked to stop.

        Whether to stop, and whether a checkpoint is due by the clock (clocks differ), must be
        decided alike on every rank, so the ranks agree on it (see :meth:`_poll`).
        """
        step = self.progress.step
        display.step()
        if (step - 1) % self.config.log_every_steps == 0 or step == last_step:
            self._log_training(step - 1)
        checkpointer = self.checkpointer
        stop, clock_due = self._poll(step)
        if stop or clock_due or (checkpointer is not None and checkpointer.due_by_steps(step)):
            self._save(wait=stop)
        if stop:
            if checkpointer is None:
                _log.warning("asked to stop, but without a CheckpointConfig nothing was saved")
            distributed.barrier()
            restart.stop_now()

    def _poll(self, step: int) -> tuple[bool, bool]:
        """Whether to stop (all ranks alike), and whether a checkpoint is due by the clock;
        reports the logged training values that have come back.

        One process decides at every step. Ranks decide through the exchange (see
        :mod:`blocktrain.train.exchange`): one starts about every ``poll_every_s`` and is read
        one step later, when its all-reduce has finished, so that no rank waits for the others
        here, nor for its GPU, and fast steps do not pay for an all-reduce each. How many
        steps make that interval is measured on every rank and agreed in the exchange itself,
        so all ranks start the next one at the same step.
        """
        agreed, points = self._exchange.collect()
        self._report(points)
        if self.world == 1:
            if self._exchange.has_closed:  # the values come off the GPU while the next step runs
                self._exchange.start()
            return restart.signalled(), self._clock_due()
        stop = clock_due = False
        if agreed is not None:
            stop, clock_due = agreed.stop, agreed.checkpoint_due
            self._next_exchange = self._last_exchange.step + agreed.steps
        if step >= self._next_exchange and not stop:
            self._start_exchange(step)
        return stop, clock_due

    def _start_exchange(self, step: int) -> None:
        """Start the next exchange, proposing as its interval the steps that take about
        ``poll_every_s`` at the pace measured since the last one."""
        now = time.perf_counter()
        since = self._last_exchange
        per_step = max((now - since.time) / max(step - since.step, 1), 1e-9)
        every = max(1, min(_EXCHANGE_MAX_STEPS, int(self.config.poll_every_s / per_step)))
        self._last_exchange = StepMark(now, step)
        self._exchange.start(
            stop=restart.signalled(), checkpoint_due=self._clock_due(), steps=every
        )

    def _clock_due(self) -> bool:
        """Whether this rank's clock says a checkpoint is due (the exchange makes it unanimous)."""
        checkpointer = self.checkpointer
        return checkpointer is not None and checkpointer.due_by_clock(time.monotonic())

    def _log_training(self, index: int) -> None:
        """Close the log window at step ``index``: its loss totals go to the other ranks with
        the next exchange; ``lr`` and ``samples_per_s`` are this rank's."""
        start = self._window_start
        now, done = time.perf_counter(), self.progress.step * self.config.batch_size
        extra = {
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "samples_per_s": (done - start.examples) / max(now - start.time, 1e-9),
        }
        self._window_start = ExampleMark(now, done)
        self._exchange.close(index, self._window, extra)

    def _report(self, points: list[Point]) -> None:
        """Record, log and show the training values that came back from the ranks."""
        for point in points:
            values = point.values
            self.progress.record("train_loss", point.index, values["train_loss"])
            self.logbook.log(values, point.index)
            self._display.values(point.index, values)

    # ---- evaluation, best checkpoint, early stopping --------------------------------------

    def evaluate(self, data: Data, prefix: str = "val") -> Evaluation:
        """The model's metrics on ``data`` over all ranks (every rank must call it).

        Every rank evaluates with rank 0's buffers (BatchNorm's running statistics), which are
        the ones a checkpoint holds: each rank's own drift after its last training batch, so the
        numbers describe the model that is saved, on any number of ranks, resumed or not.
        """
        self._share_buffers()
        batch = self.config.eval_micro_batch(self.world)
        batches, _ = batching.eval_batches(
            data,
            batch,
            rank=self.rank,
            world=self.world,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        return evaluate_model(
            self._eval_net,
            batches,
            device=self.device,
            loss_fn=self.loss_fn,
            metrics=self.metrics,
            prefix=prefix,
            precision=self.config.precision,
            channels_last=self.config.channels_last,
        )

    def _share_buffers(self) -> None:
        if self.world == 1:
            return
        for buffer in self.model.buffers():
            dist.broadcast(buffer, src=0)

    def _evaluate_and_keep(self, data: Data, display: Display) -> None:
        config, state = self.config, self.progress
        self._report(self._exchange.flush())  # the training's values come before the evaluation
        evaluation = self.evaluate(data)
        self.last_evaluation = evaluation
        state.evaluated_at, state.evaluation = state.step, dict(evaluation.values)
        confusion = evaluation.confusion
        state.confusion = confusion.tolist() if confusion is not None else None  # pyright: ignore[reportUnknownMemberType]
        values = evaluation.values
        index = state.step - 1
        for name, value in values.items():
            state.record(name, index, value)
        self.logbook.log(values, index, now=True)
        display.note(f"epoch {state.epoch:3d}  step {index:4d}  {format_values(values)}")
        value = values[config.monitor]
        stopping = config.early_stopping
        if stopping is not None:
            better = state.improves(value, config.mode, stopping.min_delta)
            state.bad_evals = 0 if better else state.bad_evals + 1
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(value)  # pyright: ignore[reportUnknownMemberType]
        if state.improves(value, config.mode):
            state.best, state.best_step = value, state.step
            self._save(best=Best(config.monitor, value))

    def _check_monitor(self) -> None:
        names = [f"val_{name}" for name in self.metrics] + ["val_loss"]
        if self.config.monitor not in names:
            raise BlocktrainError(
                f"TrainConfig.monitor {self.config.monitor!r} is not a validation metric; "
                f"choose one of {', '.join(names)}"
            )

    def _stalled(self) -> bool:
        """Whether early stopping has run out of patience."""
        stopping = self.config.early_stopping
        return stopping is not None and self.progress.bad_evals >= stopping.patience

    def _epoch_scheduler_step(self) -> None:
        if self._steps_scheduler("epoch"):
            cast("LRScheduler", self.scheduler).step()

    def _steps_scheduler(self, interval: str) -> bool:
        return (
            self.scheduler is not None
            and not isinstance(self.scheduler, ReduceLROnPlateau)
            and self.config.scheduler_interval == interval
        )

    def _steps_per_epoch(self, data: Data) -> int:
        batches = batching.batches_per_epoch(data, self.config, self.world)
        if batches == 0:
            raise BlocktrainError(
                "the training data gives no batch per rank; use more data, a smaller batch_size "
                "or drop_last=False"
            )
        return -(-batches // self.config.grad_accum_steps)

    # ---- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (a collective: every rank's RNG state is gathered)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": self._gather_rng(),
            "progress": self.progress.to_dict(),
            "world_size": self.world,
            "config": to_jsonable(
                {
                    "train": self.config,
                    "checkpoint": self.checkpointer.config if self.checkpointer else None,
                }
            ),
            "args": self.args,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` captured (on every rank)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress.from_dict(state["progress"])
        if self.progress.evaluated_at is not None:
            confusion = self.progress.confusion
            self.last_evaluation = Evaluation(
                dict(self.progress.evaluation),
                torch.tensor(confusion) if confusion is not None else None,
            )
        self._window = Totals(self.device)
        self._carry(self.progress.unlogged)
        rng: list[dict[str, Any]] = state["rng"]
        if len(rng) == self.world:
            checkpoint_files.set_rng_state(rng[self.rank])
        else:
            _log.warning(
                "resuming %d rank(s) from a checkpoint of %d: the data order continues exactly, "
                "random generators are reseeded",
                self.world,
                len(rng),
            )
            seed_everything(self.config.seed + self.rank + 7919 * self.progress.step)

    def _gather_rng(self) -> list[dict[str, Any]]:
        own = checkpoint_files.rng_state()
        if self.world == 1:
            return [own]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, own)
        return gathered

    def _start(self) -> Path | None:
        """Resume from the newest good checkpoint (returned), or seed a fresh start.

        Checkpoints passed over (torn, corrupt) are named with the reason, in the log and in
        the run; when there are checkpoints and none can be loaded, the attempt stops rather
        than train from step 0 again into the same run.
        """
        path = self.checkpointer.newest() if self.checkpointer is not None else None
        if self.checkpointer is not None:
            self._report_skipped(checkpoint_files.skipped(self.checkpointer.folder), path)
        if path is None or self.checkpointer is None:
            seed_everything(self.config.seed + self.rank)
            return None
        try:
            self.load_state_dict(resume_state(path))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise BlocktrainError(
                f"checkpoint {path} does not fit this training ({str(exc).splitlines()[0]}); give "
                "each run its own CheckpointConfig.folder, or move the file away to start afresh"
            ) from exc
        self.checkpointer.saved(self.progress.step)
        return path

    def _report_skipped(self, passed: list[tuple[Path, str]], resumed: Path | None) -> None:
        if not passed:
            return
        newest, problem = passed[0]
        if resumed is None:
            raise BlocktrainError(
                f"no checkpoint in {newest.parent} can be loaded (the newest, {newest.name}, "
                f"{problem}); training again from step 0 would repeat the run's steps: start a "
                "new run with the same arguments instead"
            )
        if self.rank == 0:
            for path, why in passed:
                _log.warning("skipped checkpoint %s: it %s; resuming from %s", path, why, resumed)
            if self.tracker is not None:
                names = ", ".join(f"{path.name} ({why})" for path, why in passed)
                self.tracker.set_tags({"blocktrain.skipped_checkpoints": names[:4000]})

    def _save(self, *, best: Best | None = None, wait: bool = False) -> None:
        self._report(self._exchange.flush())  # their points belong in the checkpoint's history
        if self.checkpointer is not None:
            self.progress.unlogged = self._unlogged()
            state, late = self.state_dict(), self._changed_by_optimizer_step()
            self.checkpointer.save(state, self.progress.step, best=best, wait=wait, late=late)

    def _unlogged(self) -> dict[str, tuple[float, int]]:
        """The training totals since the last logged point over every rank (a collective),
        for the checkpoint; from now on rank 0 carries them."""
        unlogged = self._window.reduce_sums()
        self._carry(unlogged)
        return unlogged

    def _carry(self, unlogged: Mapping[str, tuple[float, int]]) -> None:
        """Take up totals of every rank in the window: once, on rank 0 (the other ranks add
        nothing under the same names, so that every rank packs the same)."""
        for name, (total, count) in unlogged.items():
            mine = self.rank == 0
            self._window.add_total(name, total if mine else 0.0, count if mine else 0)

    def _changed_by_optimizer_step(self) -> frozenset[int]:
        """Storage of the CPU tensors that only the optimizer step changes: the parameters and
        the optimizer's state (a checkpoint may copy them until the next step)."""
        state = cast("dict[Any, dict[str, Any]]", self.optimizer.state)
        tensors = [
            *self.model.parameters(),
            *(v for values in state.values() for v in values.values() if torch.is_tensor(v)),
        ]
        return frozenset(storage_address(t) for t in tensors if not t.is_cuda)

    def _abandon(self) -> None:
        """After an error: let the write in flight finish, reporting (not raising) its failure."""
        if self.checkpointer is not None:
            try:
                self.checkpointer.close()
            except BlocktrainError as exc:
                _log.warning("%s", exc)

    # ---- the end --------------------------------------------------------------------------

    def _finish(self, sample_data: Data) -> None:
        """Exports, plots and the registered model version from rank 0, when configured."""
        config = self.export_config
        if config is None or self.rank != 0:
            return
        from blocktrain.train.export import export_model

        folder = outputs.export_folder(config, self.checkpointer)
        weights = outputs.export_weights(config, self.checkpointer)
        sample = outputs.sample_inputs(sample_data)
        note = outputs.weights_note(config, self.checkpointer)
        self.exported = export_model(
            self.model,
            sample,
            folder,
            config,
            weights=weights,
            tracker=self.tracker,
            metadata=outputs.model_metadata(self.args, self.class_names, note),
        )
        if config.plots:
            confusion = self.last_evaluation.confusion if self.last_evaluation else None
            history = self.progress.history
            outputs.plot_training(folder, history, confusion, self.class_names, self.tracker)
        outputs.register_model(config, self.tracker, note)
