"""What a training leaves behind at its end: where the exports go, which weights they hold,
the sample batch they are traced with, and the plots logged to the run.

Must not: train, evaluate or write checkpoints; it reads what the training kept. Only rank 0
calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from blocktrain.errors import BlocktrainError
from blocktrain.train import data as datasets
from blocktrain.train.checkpoint import files as checkpoint_files

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from blocktrain.track import Tracker
    from blocktrain.train.checkpoint.saver import Checkpointer
    from blocktrain.train.config import ExportConfig
    from blocktrain.train.data import Data


def export_folder(config: ExportConfig, checkpointer: Checkpointer | None) -> Path:
    """``config.folder``, else ``exports`` beside the checkpoint folder, else ``./exports``."""
    if config.folder is not None:
        return config.folder
    if checkpointer is not None:
        return checkpointer.folder.parent / "exports"
    return Path("exports")


def export_weights(
    config: ExportConfig, checkpointer: Checkpointer | None
) -> dict[str, Any] | None:
    """The best checkpoint's weights when the exports want them and there is one; else None
    (the model's weights as the training left them)."""
    best = checkpointer.best() if checkpointer is not None else None
    if config.weights == "best" and best is not None:
        return checkpoint_files.load(best)["model"]
    return None


def sample_inputs(data: Data, count: int = 8) -> torch.Tensor:
    """Up to ``count`` inputs of ``data``'s first batch, to trace and check the exports with."""
    batch = next(iter(_first_batches(data, count)))
    inputs, _ = datasets.split_batch(batch)
    if not isinstance(inputs, torch.Tensor):
        raise BlocktrainError(
            "exports need batches whose inputs are one tensor; set export=None and export "
            "the model yourself"
        )
    return inputs[:count]


def _first_batches(data: Data, count: int) -> Iterator[Any]:
    if isinstance(data, torch.utils.data.DataLoader):
        return iter(data)
    length = datasets.dataset_length(data)
    indices = list(range(min(count, length)))
    return iter(torch.utils.data.DataLoader(data, batch_size=len(indices), sampler=indices))


def plot_training(
    folder: Path,
    history: dict[str, list[tuple[int, float]]],
    confusion: torch.Tensor | None,
    class_names: Sequence[str] | None,
    tracker: Tracker | None,
) -> None:
    """The curves and, for a classifier, the confusion matrix under ``folder/plots``; logged
    to the run's ``plots`` artifacts."""
    from blocktrain.train import plots

    paths = [plots.curves(history, folder / "plots" / "curves.png")]
    if confusion is not None:
        matrix = cast("list[list[int]]", confusion.tolist())  # pyright: ignore[reportUnknownMemberType]
        path = folder / "plots" / "confusion_matrix.png"
        paths.append(plots.confusion_matrix(matrix, path, class_names))
    if tracker is not None:
        for path in paths:
            tracker.log_artifacts(path, "plots")
