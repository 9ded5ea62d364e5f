"""Dataset statistics (items per split and class, channel mean and standard deviation),
logged as MLflow params of the tracked run when there is one.

Must not change the data; the tracked run is looked up only when logging.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from blocktrain.errors import BlocktrainError

if TYPE_CHECKING:
    from torch import Tensor

DIGITS = 4  # params are immutable: a resumed run must log the very same text


class StatsSource(Protocol):
    """What statistics need from a dataset (``ImageDataset`` has it)."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def targets(self) -> tuple[int, ...] | None: ...

    def __len__(self) -> int: ...

    def image(self, index: int) -> Tensor: ...


@dataclass(frozen=True, slots=True)
class DatasetStats:
    counts: dict[str, int]
    class_counts: dict[str, dict[str, int]]  # split -> class -> items (empty without classes)
    mean: tuple[float, ...]  # per channel, of pixel values scaled to [0, 1]
    std: tuple[float, ...]
    measured_on: str  # the split mean and std come from


def channel_stats(images: Iterable[Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 (C, H, W) images scaled to [0, 1],
    over all their pixels, accumulated in float64."""
    import torch

    total = squares = None
    pixels = 0
    for image in images:
        values = image.to(torch.float64).div_(255).flatten(1)
        if total is None or squares is None:
            total, squares = values.sum(1), values.square().sum(1)
        elif values.shape[0] != total.shape[0]:
            raise BlocktrainError(
                f"images have {total.shape[0]} and {values.shape[0]} channels; decode them all "
                "in one mode (rgb or gray)"
            )
        else:
            total += values.sum(1)
            squares += values.square().sum(1)
        pixels += values.shape[1]
    if total is None or squares is None or pixels == 0:
        return (), ()
    mean = total / pixels
    variance = (squares / pixels - mean.square()).clamp_(min=0)
    return tuple(float(v) for v in mean), tuple(math.sqrt(float(v)) for v in variance)


def dataset_stats(
    dataset: StatsSource,
    splits: Mapping[str, Sequence[int]] | None = None,
    *,
    measure: str | None = None,
) -> DatasetStats:
    """Counts per split and class (from the index, nothing decoded) and channel statistics
    of one split (``measure``; default "train" when present, else the first split), since
    normalization must not look at validation or test images."""
    parts: Mapping[str, Sequence[int]] = splits or {"all": range(len(dataset))}
    measured = measure or ("train" if "train" in parts else next(iter(parts)))
    if measured not in parts:
        raise BlocktrainError(f"no split {measured!r} to measure; choose one of {list(parts)}")
    targets, classes = dataset.targets, dataset.classes
    class_counts: dict[str, dict[str, int]] = {}
    if targets is not None and classes:
        for name, indices in parts.items():
            counts = dict.fromkeys(classes, 0)
            for index in indices:
                counts[classes[targets[index]]] += 1
            class_counts[name] = counts
    mean, std = channel_stats(dataset.image(index) for index in parts[measured])
    return DatasetStats(
        counts={name: len(indices) for name, indices in parts.items()},
        class_counts=class_counts,
        mean=mean,
        std=std,
        measured_on=measured,
    )


def stats_params(stats: DatasetStats, prefix: str = "data") -> dict[str, str]:
    """The statistics as MLflow params: ``data.train.count``, ``data.train.class.cat``,
    ``data.num_classes``, ``data.mean``, ``data.std``, ``data.stats_split``."""
    params: dict[str, str] = {}
    for split, count in stats.counts.items():
        params[f"{prefix}.{split}.count"] = str(count)
    for split, counts in stats.class_counts.items():
        for name, count in counts.items():
            params[f"{prefix}.{split}.class.{name}"] = str(count)
    if stats.class_counts:
        params[f"{prefix}.num_classes"] = str(len(next(iter(stats.class_counts.values()))))
    params[f"{prefix}.mean"] = json.dumps([round(v, DIGITS) for v in stats.mean])
    params[f"{prefix}.std"] = json.dumps([round(v, DIGITS) for v in stats.std])
    params[f"{prefix}.stats_split"] = stats.measured_on
    return params


def log_dataset_stats(stats: DatasetStats, prefix: str = "data") -> dict[str, str]:
    """Log :func:`stats_params` to the tracked run of this call, if any (rank 0 writes);
    returns the params either way."""
    from blocktrain.track import current

    params = stats_params(stats, prefix)
    tracker = current()
    if tracker is not None:
        tracker.log_params(params)
    return params
