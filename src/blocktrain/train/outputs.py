"""What a training leaves behind at its end: where the exports go, which weights they hold,
the sample batch they are traced with, the plots logged to the run, and the registered model
version (``ExportConfig.register_as``).

Must not: train, evaluate or write checkpoints; it reads what the training kept. Only rank 0
calls it. A registration that fails warns in one line and never fails the run.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from blocktrain.core import envvars
from blocktrain.errors import BlocktrainError
from blocktrain.track import registry
from blocktrain.train import batching
from blocktrain.train.checkpoint import files as checkpoint_files

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from blocktrain.core.values import JSON
    from blocktrain.track import Tracker
    from blocktrain.train.batching import Data
    from blocktrain.train.checkpoint.saver import Checkpointer
    from blocktrain.train.config import ExportConfig

_log = logging.getLogger("blocktrain.train")


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


def weights_note(config: ExportConfig, checkpointer: Checkpointer | None) -> str:
    """Which weights the exports hold, in words: the best checkpoint (its file and monitored
    value) or the weights as the training ended."""
    best = checkpointer.best() if checkpointer is not None else None
    if config.weights != "best" or best is None:
        return "The weights at the end of training"
    try:
        record = json.loads((best.parent / checkpoint_files.BEST_FILE).read_text())
        score = f", {record['monitor']} {float(record['value']):.4g}"
    except (OSError, ValueError, KeyError, TypeError):
        score = ""
    return f"The best checkpoint's weights ({best.name}{score})"


def model_metadata(
    args: Mapping[str, JSON], class_names: Sequence[str] | None, weights: str
) -> dict[str, JSON]:
    """What the MLflow model keeps beside the weights (its ``MLmodel`` metadata), so that a
    registered version rebuilds its inputs as the checkpoints do: the entry function's
    arguments, the class names and which weights these are."""
    kept: dict[str, JSON] = {"args": dict(args), "weights": weights}
    if class_names is not None:
        kept["class_names"] = list(class_names)
    return {"blocktrain": kept}


def register_model(
    config: ExportConfig, tracker: Tracker | None, weights: str
) -> registry.Version | None:
    """Register the run's MLflow model as a new version of ``config.register_as``, with the
    run's final metrics in its description, once the run's uploads are through.

    Returns the version, or None after a one-line warning: the run and its exports stay
    whatever happens to the registry.
    """
    name = config.register_as
    if name is None:
        return None
    skipped = f"model not registered as {name!r}"
    run_id = tracker.run_id if tracker is not None else None
    if tracker is None or tracker.writer is None or run_id is None:
        _log.warning("%s: the training is not a tracked run (@blocktrain.entrypoint)", skipped)
        return None
    source = f"runs:/{run_id}/{registry.MODEL_ARTIFACT}"
    later = f"register it later: mlflow.register_model('{source}', '{name}')"
    if not tracker.writer.flush(tracker.config.flush_timeout_s):
        _log.warning(
            "%s: the run's uploads took over %.0f s (%s); %s",
            skipped, tracker.config.flush_timeout_s, envvars.MLFLOW_FLUSH_SECONDS.name, later,
        )  # fmt: skip
        return None
    try:
        version = registry.register(
            tracker.config.tracking_uri,
            name,
            run_id,
            metrics=final_metrics(tracker.latest_metrics),
            weights=weights,
        )
    except Exception as exc:  # noqa: BLE001 - the registry must not fail a finished training
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        _log.warning("%s: %s: %s; %s", skipped, type(exc).__name__, first[:200], later)
        return None
    sys.stdout.write(f"registered {version.uri}: {weights}\n")
    sys.stdout.flush()
    return version


def final_metrics(latest: Mapping[str, float]) -> dict[str, float]:
    """The run's metrics worth a registered version's description: not the bookkeeping
    (attempt number, machine load)."""
    return {
        name: value
        for name, value in latest.items()
        if name != "attempt" and not name.startswith("system/")
    }


def sample_inputs(data: Data, count: int = 8) -> torch.Tensor:
    """Up to ``count`` inputs of ``data``'s first batch, to trace and check the exports with."""
    batch = next(iter(_first_batches(data, count)))
    inputs, _ = batching.split_batch(batch)
    if not isinstance(inputs, torch.Tensor):
        raise BlocktrainError(
            "exports need batches whose inputs are one tensor; set export=None and export "
            "the model yourself"
        )
    return inputs[:count]


def _first_batches(data: Data, count: int) -> Iterator[Any]:
    if isinstance(data, torch.utils.data.DataLoader):
        return iter(data)
    length = batching.dataset_length(data)
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
