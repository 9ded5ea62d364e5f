"""The trained LightningModule in the forms people deploy, into the run, as the Trainer's.

:func:`export` hands the module to :func:`blocktrain.train.export.export_model`: a state dict,
TorchScript, ONNX and an MLflow model, each checked against PyTorch's output on a sample batch
and logged to the run's artifacts (``exports/``, ``model/``).

Must not: train, or choose what to export beyond the config (the caller passes the sample).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from blocktrain import track
from blocktrain.lightning.plugins import DurableCheckpointIO
from blocktrain.train.checkpoint.saver import default_folder
from blocktrain.train.config import ExportConfig
from blocktrain.train.export import Exported, export_model

DEFAULT = ExportConfig(formats=("pth", "torchscript", "onnx", "mlflow"), weights="best")


def best_weights(trainer: L.Trainer) -> dict[str, Any] | None:
    """The state dict of the best checkpoint of the Trainer's ``ModelCheckpoint``, if any."""
    callback = trainer.checkpoint_callback
    best = str(callback.best_model_path) if isinstance(callback, ModelCheckpoint) else ""  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    if not best or not Path(best).is_file():
        return None
    state = DurableCheckpointIO().load_checkpoint(best)
    return dict(state["state_dict"])


def export(
    trainer: L.Trainer, sample: torch.Tensor, config: ExportConfig = DEFAULT
) -> Exported | None:
    """After ``trainer.fit``, on every rank: rank 0 writes the module in ``config.formats`` to
    ``config.folder`` (default: ``exports`` in the run's folder) and logs each file to the run;
    the others return None.

    ``sample`` is a batch of the module's inputs (its ``forward``'s). ``config.weights``:
    ``"best"`` exports the best checkpoint of the Trainer's ``ModelCheckpoint`` when it has one,
    ``"last"`` the weights as training left them.
    """
    folder = config.folder if config.folder is not None else default_folder().parent / "exports"
    if not trainer.is_global_zero:
        return None
    weights = best_weights(trainer) if config.weights == "best" else None
    module = copy.deepcopy(trainer.lightning_module)  # without its Trainer (Lightning drops it)
    # Tracing reads every attribute, and `trainer` raises on a module without one unless
    # Lightning is told it is scripting, as its own to_torchscript does.
    module._jit_is_scripting = True  # pyright: ignore[reportPrivateUsage]
    return export_model(module, sample, folder, config, weights=weights, tracker=track.current())
