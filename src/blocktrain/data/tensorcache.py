"""Preprocess a dataset once into tensors in one file, and reload it in milliseconds.

``tensor_cache(path, build, key=...)`` loads ``path`` when it holds tensors built for ``key``,
and otherwise builds them from ``build()`` (under a lock, so one rank builds while the others
wait), applying ``preprocess`` to each raw uint8 image (a deterministic resize, say: random
augmentations belong in the transform applied at each access). The file is written by
``torch.save`` to a temporary name and renamed (``blocktrain.core.atomic``), and is
memory-mapped when loaded.

Must not fetch or decode data: it stores what an :class:`ImageDataset` yields, and reloads it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from blocktrain.core.atomic import atomic_output, locked
from blocktrain.data.datasets import ImageDataset, Target, Transform
from blocktrain.errors import BlocktrainError

FORMAT = "blocktrain.tensorcache"
VERSION = 1


class TensorCacheError(BlocktrainError):
    """A tensor cache file that cannot serve the request."""


class TensorCacheDataset(Dataset[tuple[Any, Any]]):
    """Items from a tensor cache: ``images`` (N, ...) and ``targets`` (N, ...) tensors."""

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        *,
        classes: tuple[str, ...] = (),
        keys: tuple[str, ...] = (),
        transform: Transform | None = None,
    ) -> None:
        self.images = images
        self.target_tensor = targets
        self.classes = classes
        self.keys = keys
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def targets(self) -> tuple[int, ...] | None:
        if self.classes and self.target_tensor.dim() == 1:
            return tuple(int(v) for v in self.target_tensor)
        return None

    def image(self, index: int) -> Tensor:
        return self.images[index]

    def target(self, index: int) -> Target:
        value = self.target_tensor[index]
        return int(value) if self.classes and value.dim() == 0 else value

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.image(index), self.target(index)
        if self.transform is None:
            return image, target
        return self.transform(image), target


def build_tensor_cache(
    dataset: ImageDataset,
    path: Path,
    *,
    key: str,
    preprocess: Callable[[Tensor], Tensor] | None = None,
) -> Path:
    """Write every item of ``dataset`` (raw images through ``preprocess``) to ``path``."""
    count = len(dataset)
    if count == 0:
        raise TensorCacheError(f"{dataset.source} has no items to cache")
    images: Tensor | None = None
    targets: list[Tensor] = []
    for index in range(count):
        image = dataset.image(index)
        if preprocess is not None:
            image = preprocess(image)
        if images is None:
            images = torch.empty((count, *image.shape), dtype=image.dtype)
        elif tuple(image.shape) != tuple(images.shape[1:]):
            raise TensorCacheError(
                f"{dataset.source}: item {dataset.keys[index]!r} has shape {tuple(image.shape)}, "
                f"the first {tuple(images.shape[1:])}; add a resize to preprocess"
            )
        images[index] = image
        target = dataset.target(index)
        targets.append(torch.as_tensor(target).clone())
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "key": key,
        "source": dataset.source,
        "classes": list(dataset.classes),
        "keys": list(dataset.keys),
        "images": images,
        "targets": torch.stack(targets),
    }
    with atomic_output(path, mode=0o666) as file:  # readable by whoever reads the dataset
        torch.save(payload, file)
    return path


def load_tensor_cache(
    path: Path, *, key: str | None = None, transform: Transform | None = None
) -> TensorCacheDataset:
    """The dataset in ``path`` (memory-mapped); :class:`TensorCacheError` when it is not a
    tensor cache or was built for another ``key``."""
    try:
        payload: dict[str, Any] = torch.load(path, mmap=True, weights_only=True)
    except FileNotFoundError:
        raise TensorCacheError(f"{path} does not exist; build it with build_tensor_cache") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise TensorCacheError(
            f"cannot read {path} as a tensor cache ({type(error).__name__}); delete it and "
            "build it again"
        ) from None
    if payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise TensorCacheError(
            f"{path} is not a version {VERSION} tensor cache; delete it and build it again"
        )
    if key is not None and payload.get("key") != key:
        raise TensorCacheError(
            f"{path} was built for {payload.get('key')!r}, not {key!r}; delete it or use "
            "another path"
        )
    return TensorCacheDataset(
        payload["images"],
        payload["targets"],
        classes=tuple(payload["classes"]),
        keys=tuple(payload["keys"]),
        transform=transform,
    )


def tensor_cache(
    path: Path,
    build: Callable[[], ImageDataset],
    *,
    key: str,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    transform: Transform | None = None,
) -> TensorCacheDataset:
    """Load ``path`` if it was built for ``key``, else build it from ``build()`` first.

    Args:
        path: the cache file (e.g. beside the localized dataset).
        build: makes the source dataset; called only when the cache must be built.
        key: what the tensors were made from and how (source, preprocessing); a file built
            for another key is rebuilt.
        preprocess: applied once to each raw image before it is stored.
        transform: applied to each item at access (augmentations).
    """
    with contextlib.suppress(TensorCacheError):
        return load_tensor_cache(path, key=key, transform=transform)
    with locked(path.with_name(f".{path.name}.lock")):
        with contextlib.suppress(TensorCacheError):
            return load_tensor_cache(path, key=key, transform=transform)
        build_tensor_cache(build(), path, key=key, preprocess=preprocess)
    return load_tensor_cache(path, key=key, transform=transform)
