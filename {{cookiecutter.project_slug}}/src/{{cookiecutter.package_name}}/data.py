"""The dataset, read through blocktrain's data layer.

:func:`load` makes the source local (an S3 prefix is fetched once into the cache), decodes
every image into memory, splits the images by stable hashes of their names (the same split
on every machine and in every run of a sweep), measures the training split's channel
statistics and logs them to the run, and returns the three splits with their transforms.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import Subset

Transform = Callable[[Any], Any]
SPLIT_SEED = "sky-v1"  # changing it reshuffles every split: runs would no longer compare


@dataclass(frozen=True, kw_only=True)
class Data:
    """Where the dataset is, how it is split, and how training images are augmented."""

    source: str = "data/sky"
    """a folder (relative paths from the project root) or ``s3://bucket/prefix``"""
    size: int = 48
    """side of the square images the network sees"""
    val_percent: float = 15.0
    """share of the images in the validation split"""
    test_percent: float = 15.0
    """share of the images in the test split"""
    augment: bool = True
    """random crops and flips of the training images"""

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {self.size}")
        held_out = self.val_percent + self.test_percent
        if min(self.val_percent, self.test_percent) <= 0 or held_out >= 100:
            raise ValueError(
                "val_percent and test_percent must be positive and leave room for training, "
                f"got {self.val_percent} and {self.test_percent}"
            )


@dataclass(frozen=True, slots=True)
class Normalization:
    """Per-channel mean and standard deviation of the training images, in [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Splits:
    """The train, validation and test datasets of ``(image, class index)`` pairs."""

    train: Subset[Any]
    val: Subset[Any]
    test: Subset[Any]
    classes: tuple[str, ...]
    normalization: Normalization


def local_source(source: str) -> Path:
    """The dataset as a local folder: S3 fetched through the cache, relative paths resolved
    from the project root (a job's working folder may be elsewhere)."""
    from blocktrain.core.paths import project_root
    from blocktrain.data.cache import localize

    if source.startswith("s3://"):
        return localize(source)
    path = Path(source)
    return localize(path if path.is_absolute() else project_root(Path.cwd()) / path)


def load(data: Data, *, log_stats: bool = True) -> Splits:
    """Read, split and normalize the dataset; the statistics become params of the run."""
    from blocktrain.data.datasets import InMemoryImageDataset
    from blocktrain.data.layouts import Layout
    from blocktrain.data.splits import split_indices
    from blocktrain.data.stats import dataset_stats, log_dataset_stats
    from torch.utils.data import Subset

    images = InMemoryImageDataset(local_source(data.source), layout=Layout(root="images"))
    train_percent = 100 - data.val_percent - data.test_percent
    ratios = {"train": train_percent, "val": data.val_percent, "test": data.test_percent}
    parts = split_indices(images.keys, ratios, seed=SPLIT_SEED)
    stats = dataset_stats(images, parts)
    if log_stats:
        log_dataset_stats(stats)
    norm = Normalization(stats.mean, stats.std)
    evaluation = eval_transform(data.size, norm)
    training = train_transform(data.size, norm) if data.augment else evaluation

    def part(name: str, transform: Transform) -> Subset[Any]:
        # A shallow copy shares the decoded images and changes only the transform.
        view = copy.copy(images)
        view.transform = transform
        return Subset(view, parts[name])

    return Splits(
        train=part("train", training),
        val=part("val", evaluation),
        test=part("test", evaluation),
        classes=images.classes,
        normalization=norm,
    )


def train_transform(size: int, norm: Normalization) -> Transform:
    """Random crops of 80-100 % of the image and horizontal flips, then normalization."""
    from blocktrain.data.augment import train_transforms

    transform: Transform = train_transforms(size, mean=norm.mean, std=norm.std, scale=(0.8, 1.0))
    return transform


def eval_transform(size: int, norm: Normalization) -> Transform:
    """Resize to ``size``, then normalization: what validation, test and video frames get."""
    from blocktrain.data.augment import eval_transforms

    transform: Transform = eval_transforms(size, mean=norm.mean, std=norm.std)
    return transform
