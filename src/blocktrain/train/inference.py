"""``evaluate`` and ``predict``: a trained model, from a run's checkpoint, on new data.

A run's checkpoints are found where ``slurm-launch`` keeps them
(``.blocktrain/runs/<run id>/checkpoints`` in the project), else in the run's MLflow
artifacts (``checkpoints/best`` or ``checkpoints/last``), downloaded and checked against
their checksums. A registered model version, ``models:/NAME/VERSION``, stands wherever a
checkpoint does (:mod:`blocktrain.train.registered`). Both functions run on every rank of a
distributed job: each rank takes every world-size-th example, and rank 0 reports.

Must not: train or write checkpoints; it only reads them (and downloads them when none is
local).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

import torch
import torch.distributed as dist

from blocktrain import track
from blocktrain.core.paths import Layout, RunFiles, project_root
from blocktrain.distributed import rank_and_world
from blocktrain.errors import BlocktrainError
from blocktrain.track.registry import is_model_uri
from blocktrain.train import batching
from blocktrain.train.checkpoint import files as checkpoint
from blocktrain.train.device import autocast, default_device
from blocktrain.train.evaluation import evaluate_model

if TYPE_CHECKING:
    from torch import nn

    from blocktrain.core.values import JSON
    from blocktrain.train.batching import Data
    from blocktrain.train.metrics import MetricFn

    RowFn = Callable[[torch.Tensor], list[dict[str, JSON]]]

Which = Literal["best", "last"]


def _run_folder(run_id: str) -> Path:
    return Layout(project_root(Path.cwd())).checkpoints(run_id)


def _local(folder: Path, which: Which) -> Path | None:
    if which == "best":
        found = checkpoint.best(folder)
        if found is not None:
            return found
    return checkpoint.newest_good(folder)


def _download(run_id: str, which: Which, into: Path) -> Path | None:
    """The run's uploaded checkpoint, downloaded under ``into`` and verified; None if absent."""
    from mlflow import MlflowClient

    from blocktrain.track.backend import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(os.environ, project_root(Path.cwd())))
    for kind in (which, "last") if which == "best" else (which,):
        listed = client.list_artifacts(run_id, f"checkpoints/{kind}")  # pyright: ignore[reportUnknownMemberType]
        names = {Path(item.path).name for item in listed}
        if f"{kind}.pt" not in names:
            continue
        into.mkdir(parents=True, exist_ok=True)
        local = Path(client.download_artifacts(run_id, f"checkpoints/{kind}", str(into)))
        path = local / f"{kind}.pt"
        if not checkpoint.is_good(path):
            raise BlocktrainError(
                f"the {kind} checkpoint of run {run_id} does not match its checksum after the "
                "download; download it again, or use the other one (which='last')"
            )
        return path
    return None


def find_checkpoint(
    *,
    run_id: str | None = None,
    folder: Path | None = None,
    which: Which = "best",
    model_uri: str | None = None,
) -> Path:
    """The best (else the newest) or the newest good checkpoint of a folder or of a run, or
    the checkpoint of a registered model version.

    For a run: its checkpoint folder in this project, else its MLflow artifacts (downloaded
    into ``.blocktrain/runs/<run id>/downloaded``). For ``model_uri`` (``models:/NAME/VERSION``,
    ``models:/NAME/latest``, ``models:/NAME@ALIAS``): the weights that version holds, as
    :func:`blocktrain.train.registered.registered_checkpoint` keeps them (``which`` does not
    apply).
    """
    if model_uri is not None:
        from blocktrain.train.registered import registered_checkpoint

        return registered_checkpoint(model_uri).path
    if folder is None and run_id is None:
        raise BlocktrainError("find_checkpoint needs a run_id, a folder or a model_uri")
    where = folder if folder is not None else _run_folder(cast("str", run_id))
    found = _local(where, which)
    if found is None and run_id is not None:
        # A run's checkpoint folder is one of its run folder's files (RunFiles.checkpoints).
        found = _download(run_id, which, RunFiles(where.parent).downloaded)
    if found is None:
        whose = f"run {run_id}" if run_id is not None else str(where)
        raise BlocktrainError(
            f"no good checkpoint for {whose} (looked in {where}"
            f"{' and its MLflow artifacts' if run_id else ''}); check the id, or train it first"
        )
    return found


class RunCheckpoint(NamedTuple):
    """A checkpoint to load, and the training run it belongs to."""

    path: Path
    run_id: str


def checkpoint_of(
    *, run_id: str | None = None, model: str | None = None, which: Which = "best"
) -> RunCheckpoint:
    """The checkpoint an ``evaluate`` or ``predict`` entry function loads, and its training run.

    Exactly one of the two names it: ``run_id``, a training run (its best or last checkpoint,
    as :func:`find_checkpoint` finds it), or ``model``, a registered model version
    (``models:/NAME/VERSION``, ``models:/NAME/latest``, ``models:/NAME@ALIAS``; the run is the
    one it was registered from, and ``which`` does not apply).
    """
    if (run_id is None) == (model is None):
        raise BlocktrainError(
            "name the trained model once: a training run, or a registered model version "
            "(models:/NAME/VERSION)"
        )
    if model is not None:
        from blocktrain.train.registered import registered_checkpoint

        kept = registered_checkpoint(model)
        return RunCheckpoint(kept.path, kept.run_id)
    run = cast("str", run_id)
    return RunCheckpoint(find_checkpoint(run_id=run, which=which), run)


def load_weights(
    model: nn.Module,
    source: Path | str | None = None,
    *,
    run_id: str | None = None,
    which: Which = "best",
) -> Path:
    """Load a checkpoint's model weights into ``model``; returns the checkpoint used.

    ``source`` is a checkpoint file, a folder of them or a registered model version
    (``models:/NAME/VERSION``); without it, ``run_id`` names the run.
    """
    if is_model_uri(source):
        path = find_checkpoint(model_uri=cast("str", source))
    elif source is not None and Path(source).is_file():
        path = Path(source)
    else:
        folder = Path(source) if source is not None else None
        path = find_checkpoint(run_id=run_id, folder=folder, which=which)
    state = checkpoint.load(path)
    model.load_state_dict(state.get("model", state))
    return path


def evaluate(
    model: nn.Module,
    data: Data,
    *,
    checkpoint_path: Path | str | None = None,
    run_id: str | None = None,
    which: Which = "best",
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
    split: str = "test",
    batch_size: int = 256,
    precision: str = "fp32",
    device: torch.device | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` over all ranks, logged to the current run.

    The weights come from ``checkpoint_path`` (a file, a folder or ``models:/NAME/VERSION``) or
    the run's best (else last) checkpoint; with neither, the model is evaluated as it is.
    Names are ``{split}_{metric}`` and ``{split}_loss``.
    """
    device = device or default_device()
    if checkpoint_path is not None or run_id is not None:
        load_weights(model, checkpoint_path, run_id=run_id, which=which)
    model.to(device)
    rank, world = rank_and_world()
    batches, _ = batching.eval_batches(
        data,
        max(1, batch_size // world),
        rank=rank,
        world=world,
        num_workers=0,
        pin_memory=device.type == "cuda",
    )
    result = evaluate_model(
        model,
        batches,
        device=device,
        loss_fn=loss_fn,
        metrics=metrics,
        prefix=split,
        precision=precision,
    )
    tracker = track.current()
    if tracker is not None:
        tracker.log_metrics(result.values)
    return result.values


def default_rows(outputs: torch.Tensor) -> list[dict[str, JSON]]:
    """One row per example: class and probability for logits ``[batch, classes]``, else the
    flattened output values."""
    if outputs.dim() == 2 and outputs.shape[1] > 1:
        probabilities = outputs.float().softmax(dim=1)
        scores, classes = probabilities.max(dim=1)
        # tolist() is untyped in torch's stubs.
        predicted = cast("list[int]", classes.tolist())  # pyright: ignore[reportUnknownMemberType]
        confidence = cast("list[float]", scores.tolist())  # pyright: ignore[reportUnknownMemberType]
        return [{"prediction": c, "score": s} for c, s in zip(predicted, confidence, strict=True)]
    flat = cast("list[list[float]]", outputs.float().reshape(outputs.shape[0], -1).tolist())  # pyright: ignore[reportUnknownMemberType]
    return [{"output": row[0] if len(row) == 1 else cast("JSON", row)} for row in flat]


def predict(
    model: nn.Module,
    data: Data,
    output: Path,
    *,
    checkpoint_path: Path | str | None = None,
    run_id: str | None = None,
    which: Which = "best",
    rows: RowFn | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
    device: torch.device | None = None,
) -> Path:
    """Batched inference over ``data``, written by rank 0 to ``output`` (.csv or .json).

    The weights come as :func:`evaluate`'s do. Each row starts with the example's ``index`` in
    ``data``; ``rows`` turns a batch of outputs into rows (default: :func:`default_rows`). The
    file is also logged to the current run under ``predictions/``. Returns ``output``.
    """
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise BlocktrainError(f"predictions go to a .csv or .json file, not {output.name!r}")
    device = device or default_device()
    if checkpoint_path is not None or run_id is not None:
        load_weights(model, checkpoint_path, run_id=run_id, which=which)
    model.to(device).eval()
    rank, world = rank_and_world()
    batches, indices = batching.eval_batches(
        data, max(1, batch_size // world), rank=rank, world=world, num_workers=0, pin_memory=False
    )
    produced: list[dict[str, JSON]] = []
    with torch.no_grad():
        for batch in batches:
            inputs, _ = batching.split_batch(batching.to_device(batch, device))
            with autocast(device, precision):
                outputs = cast("torch.Tensor", model(inputs))
            produced.extend((rows or default_rows)(outputs.float().cpu()))
    numbered = [
        {"index": index, **row}
        for index, row in zip(indices or range(len(produced)), produced, strict=True)
    ]
    everything = _gather_rows(numbered, world)
    if rank == 0:
        _write_rows(sorted(everything, key=lambda row: cast("int", row["index"])), output)
        tracker = track.current()
        if tracker is not None:
            tracker.log_artifacts(output, "predictions")
    return output


def _gather_rows(rows: list[dict[str, JSON]], world: int) -> list[dict[str, JSON]]:
    if world == 1:
        return rows
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, rows)
    return [row for part in cast("list[list[dict[str, JSON]]]", gathered) for row in part]


def _write_rows(rows: Sequence[Mapping[str, JSON]], output: Path) -> None:
    from blocktrain.core.atomic import write_text_atomic

    if output.suffix.lower() == ".json":
        write_text_atomic(output, json.dumps(list(rows), indent=1) + "\n")
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()}
        )
    write_text_atomic(output, text.getvalue())
