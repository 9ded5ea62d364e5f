"""The training engine's settings: small keyword-only dataclasses, validated when built.

They hold plain values only (no torch types), so that an entry function can take them as
parameters and an experiment YAML can fill them (``train: {epochs: 30, precision: bf16}``);
importing this module does not import torch.

Must not: import torch, or read the environment or files; the entry function passes the
values in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from blocktrain.errors import BlocktrainError

Precision = Literal["fp32", "bf16", "fp16"]
Mode = Literal["min", "max"]
ExportFormat = Literal["pth", "torchscript", "onnx", "mlflow"]


class TrainConfigError(BlocktrainError, ValueError):
    """A setting out of range; a ValueError too, so that entry-argument checks report it."""


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise TrainConfigError(f"{name} must be a positive number, got {value}")


@dataclass(frozen=True, kw_only=True, slots=True)
class EarlyStopping:
    """Stop when the monitored validation metric has not improved for ``patience`` evaluations.

    An evaluation improves on the best so far when it beats it by more than ``min_delta``.
    """

    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise TrainConfigError(
                f"early_stopping.patience must be at least 1, got {self.patience}"
            )
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise TrainConfigError(
                f"early_stopping.min_delta must be 0 or more, got {self.min_delta}"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """How :class:`~blocktrain.train.loop.Trainer` trains.

    ``batch_size`` is the global batch of one optimizer step, over all ranks and accumulated
    micro-batches: each rank loads ``batch_size / (world size * grad_accum_steps)`` examples at
    a time, so one experiment file gives the same training on 1 or N processes.
    """

    epochs: int = 1
    """passes over the training data"""
    max_steps: int | None = None
    """stop after this many optimizer steps, even mid-epoch"""
    batch_size: int = 32
    """examples per optimizer step over all ranks"""
    grad_accum_steps: int = 1
    """micro-batches whose gradients add up to one optimizer step"""
    clip_grad_norm: float | None = None
    """clip the global gradient norm to this value"""
    scheduler_interval: Literal["step", "epoch"] = "step"
    """when the learning-rate scheduler steps (ReduceLROnPlateau: after each evaluation)"""
    seed: int = 0
    """seed of python, numpy and torch (plus the rank), and of the data order"""
    shuffle: bool = True
    """reshuffle the training data every epoch"""
    drop_last: bool = False
    """drop the last, incomplete batch of each epoch"""
    num_workers: int = 0
    """DataLoader worker processes per rank"""
    precision: Precision = "fp32"
    """fp32, or automatic mixed precision: bf16, fp16 (CUDA, with a gradient scaler)"""
    channels_last: bool = False
    """channels-last memory format for 4-d inputs and the model (CUDA convolutions)"""
    compile: bool = False
    """torch.compile the model"""
    eval_every_epochs: int = 1
    """evaluate on the validation data after every this many epochs (and at the end)"""
    eval_batch_size: int | None = None
    """examples per evaluation batch over all ranks (default: batch_size)"""
    monitor: str = "val_loss"
    """the validation metric that picks the best checkpoint and drives early stopping"""
    mode: Mode = "min"
    """whether a smaller or a larger monitored value is better"""
    early_stopping: EarlyStopping | None = None
    """stop when the monitored metric stops improving"""
    log_every_steps: int = 10
    """log the training loss (MLflow, progress lines) every this many steps"""
    log_flush_seconds: float = 5.0
    """hand logged training metrics to MLflow's background writer at most this often"""
    poll_every_s: float = 0.5
    """under DDP: how often (seconds, in whole steps; 0: every step) the ranks agree on
    stopping and on a checkpoint due by the clock, and exchange the logged training loss; a
    stop waits at most this plus a step, a logged point reaches MLflow up to this late"""

    def __post_init__(self) -> None:
        counts = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "grad_accum_steps": self.grad_accum_steps,
            "eval_every_epochs": self.eval_every_epochs,
            "log_every_steps": self.log_every_steps,
        }
        for name, value in counts.items():
            if value < 1:
                raise TrainConfigError(f"{name} must be at least 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainConfigError(f"max_steps must be at least 1 (or null), got {self.max_steps}")
        if self.num_workers < 0:
            raise TrainConfigError(f"num_workers must be 0 or more, got {self.num_workers}")
        if self.clip_grad_norm is not None:
            _positive("clip_grad_norm", self.clip_grad_norm)
        for name, seconds in (
            ("log_flush_seconds", self.log_flush_seconds),
            ("poll_every_s", self.poll_every_s),
        ):
            if not (math.isfinite(seconds) and seconds >= 0):
                raise TrainConfigError(f"{name} must be 0 or more, got {seconds}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise TrainConfigError(
                f"eval_batch_size must be at least 1 (or null), got {self.eval_batch_size}"
            )
        if self.batch_size % self.grad_accum_steps:
            raise TrainConfigError(
                f"batch_size {self.batch_size} is not divisible by grad_accum_steps "
                f"{self.grad_accum_steps}; make it a multiple"
            )

    def micro_batch(self, world_size: int) -> int:
        """Examples per rank and micro-batch; raises when the global batch does not split."""
        per_step = self.grad_accum_steps * world_size
        if self.batch_size % per_step:
            raise TrainConfigError(
                f"batch_size {self.batch_size} does not split over {world_size} rank(s) x "
                f"{self.grad_accum_steps} accumulation step(s); make it a multiple of {per_step}"
            )
        return self.batch_size // per_step

    def eval_micro_batch(self, world_size: int) -> int:
        """Examples per rank and evaluation batch (at least one)."""
        return max(1, (self.eval_batch_size or self.batch_size) // world_size)


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportConfig:
    """What :func:`~blocktrain.train.export.export_model` writes at the end of training.

    The ONNX file is checked: onnxruntime's output on a sample batch must match PyTorch's
    within ``rtol``/``atol``.
    """

    folder: Path | None = None
    """where the files go (default: ``exports`` beside the checkpoint folder, else ./exports)"""
    formats: tuple[ExportFormat, ...] = ("pth", "torchscript", "onnx", "mlflow")
    """pth (state dict), torchscript (.pt), onnx (.onnx), mlflow (an MLflow model)"""
    weights: Literal["best", "last"] = "best"
    """export the best checkpoint's weights when there is one, or the last ones"""
    plots: bool = True
    """confusion matrix (classifiers) and loss/metric curves as images"""
    onnx_opset: int | None = None
    """ONNX opset (default: the exporter's)"""
    rtol: float = 1e-3
    atol: float = 1e-4
    register_as: str | None = None
    """register the MLflow model as a new version of this registered model (rank 0, tracked
    runs; the version's description holds the run's final metrics)"""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.formats) - {"pth", "torchscript", "onnx", "mlflow"})
        if unknown:
            raise TrainConfigError(
                f"unknown export format(s) {', '.join(unknown)}; "
                "choose from pth, torchscript, onnx, mlflow"
            )
        _positive("rtol", self.rtol)
        _positive("atol", self.atol)
        if self.register_as is not None:
            self._check_registration(self.register_as)

    def _check_registration(self, name: str) -> None:
        from blocktrain.track.registry import NAME_PATTERN

        if not NAME_PATTERN.fullmatch(name):
            raise TrainConfigError(
                f"register_as {name!r} cannot name a registered model; use letters, digits, "
                "'.', '_' and '-', starting with a letter or digit"
            )
        if "mlflow" not in self.formats:
            raise TrainConfigError(
                "register_as registers the MLflow model: add 'mlflow' to formats, or drop "
                "register_as"
            )
