"""The training engine: plain PyTorch building blocks for train, evaluate and predict.

- :mod:`~blocktrain.train.config`: the settings (``TrainConfig``, ``EarlyStopping``,
  ``ExportConfig``; ``CheckpointConfig`` lives in :mod:`blocktrain.train.checkpoint`);
- :mod:`~blocktrain.train.loop`: ``Trainer`` (fit, evaluate, checkpoint state);
- :mod:`~blocktrain.train.inference`: ``evaluate`` and ``predict`` from a run's checkpoint,
  and ``checkpoint_of``, the checkpoint (and run) that a run id or a registered model names;
- :mod:`~blocktrain.train.registered`: a registered model version (``models:/NAME/VERSION``)
  as a checkpoint;
- :mod:`~blocktrain.train.checkpoint.args`: ``record_args`` and ``recorded_args``, what a
  training keeps in every checkpoint to rebuild its network, as a dataclass of its own;
- :mod:`~blocktrain.train.batching`: ``planned_steps``, the optimizer steps a training takes
  (for a learning-rate schedule), and the per-rank batches;
- :mod:`~blocktrain.train.evaluation`: ``evaluate_model``, a model's metrics over all ranks;
- :mod:`~blocktrain.train.device`: the device, mixed precision, the compiled and DDP-wrapped
  model, ``seed_everything``;
- :mod:`~blocktrain.train.outputs`: the end of a training: export folder and weights, plots;
- :mod:`~blocktrain.train.metrics`, :mod:`~blocktrain.train.checkpoint`,
  :mod:`~blocktrain.train.export`, :mod:`~blocktrain.train.plots`,
  :mod:`~blocktrain.train.progress`, :mod:`~blocktrain.train.batching`,
  :mod:`~blocktrain.train.exchange`, :mod:`~blocktrain.train.logbook`,
  :mod:`~blocktrain.train.state`: the pieces they use.

Importing this package, or its config module, does not import torch, so that entry modules
can take the configs as typed parameters and still load fast; the names below that need torch
load on first use.

Must not: talk to Slurm or decide on requeues (:mod:`blocktrain.restart` and
:mod:`blocktrain.launch` do).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from blocktrain.train.checkpoint import CheckpointConfig
from blocktrain.train.config import EarlyStopping, ExportConfig, TrainConfig, TrainConfigError

if TYPE_CHECKING:
    from blocktrain.train.batching import planned_steps
    from blocktrain.train.checkpoint.args import record_args, recorded_args
    from blocktrain.train.checkpoint.saver import default_folder
    from blocktrain.train.device import seed_everything
    from blocktrain.train.evaluation import evaluate_model
    from blocktrain.train.inference import (
        RunCheckpoint,
        checkpoint_of,
        evaluate,
        find_checkpoint,
        load_weights,
        predict,
    )
    from blocktrain.train.loop import Trainer
    from blocktrain.train.metrics import accuracy
    from blocktrain.train.registered import registered_checkpoint

_LAZY = {
    "Trainer": "loop",
    "evaluate_model": "evaluation",
    "seed_everything": "device",
    "accuracy": "metrics",
    "default_folder": "checkpoint.saver",
    "evaluate": "inference",
    "predict": "inference",
    "find_checkpoint": "inference",
    "load_weights": "inference",
    "registered_checkpoint": "registered",
    "checkpoint_of": "inference",
    "RunCheckpoint": "inference",
    "planned_steps": "batching",
    "record_args": "checkpoint.args",
    "recorded_args": "checkpoint.args",
}

__all__ = [
    "CheckpointConfig",
    "EarlyStopping",
    "ExportConfig",
    "RunCheckpoint",
    "TrainConfig",
    "TrainConfigError",
    "Trainer",
    "accuracy",
    "checkpoint_of",
    "default_folder",
    "evaluate",
    "evaluate_model",
    "find_checkpoint",
    "load_weights",
    "planned_steps",
    "predict",
    "record_args",
    "recorded_args",
    "registered_checkpoint",
    "seed_everything",
]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whatever the named module defines
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blocktrain.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"blocktrain.train.{module}"), name)
