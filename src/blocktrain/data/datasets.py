"""Torch datasets of images and labels from a folder, a zip or tar archive, or an S3 prefix,
in two kinds with one interface:

- :class:`LazyImageDataset` reads and decodes an item when it is asked for: little memory,
  and DataLoader workers read in parallel.
- :class:`InMemoryImageDataset` decodes everything once into RAM as uint8 tensors: fastest
  epochs. It estimates the memory first and stops with a clear error when it will not fit.

Items are ``(image, target)``: a uint8 (C, H, W) image and a class index (layouts ``folders``
and ``csv``) or a label tensor (``pairs``; masks come as ``tv_tensors.Mask``). A transform
(torchvision.transforms.v2, on uint8) is called as ``transform(image)`` for class and numeric
targets, and as ``transform(image, mask)`` for masks, so geometric transforms move both.

Must not fetch or cache sources (``fetchers`` reads members, ``cache`` makes them local)
nor decide splits (``splits``).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from blocktrain.data.fetchers import Fetcher, open_fetcher
from blocktrain.data.images import Mode, decode_image, decode_label
from blocktrain.data.layouts import Index, Layout, LayoutKind, build_index, is_image
from blocktrain.data.memory import available_memory, check_fits, estimate_bytes, format_size
from blocktrain.data.storage import Storage

Target = int | Tensor
Transform = Callable[..., Any]
_log = logging.getLogger("blocktrain.data")
PROBE = 16  # images decoded up front to estimate a preloaded dataset's memory


class ImageDataset(Dataset[tuple[Any, Any]]):
    """What both kinds share: the source's index, classes, keys and transforms."""

    def __init__(
        self,
        source: str | Path,
        *,
        layout: Layout | LayoutKind = "folders",
        mode: Mode = "rgb",
        transform: Transform | None = None,
        storage: Storage | None = None,
    ) -> None:
        """Index ``source``.

        Args:
            source: a folder, a .zip/.tar/.tar.gz file, or an ``s3://`` prefix (for an S3
                archive, pass ``localize(uri)``).
            layout: how images and labels are arranged (see ``blocktrain.data.layouts``).
            mode: decode images as "rgb" (3 channels), "gray" (1) or "unchanged".
            transform: applied to each item as the module docstring says.
            storage: the storage of an ``s3://`` source (default from the environment).
        """
        self.fetcher: Fetcher = open_fetcher(source, storage)
        self.layout = layout if isinstance(layout, Layout) else Layout(kind=layout)
        self.index: Index = build_index(
            self.fetcher.names(), self.layout, self.fetcher.source, self.fetcher.read
        )
        self.mode: Mode = mode
        self.transform = transform

    @property
    def source(self) -> str:
        return self.fetcher.source

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in index order (empty for the ``pairs`` layout)."""
        return self.index.classes

    @property
    def keys(self) -> tuple[str, ...]:
        """The image member of each item: stable identifiers for splits."""
        return self.index.images

    @property
    def targets(self) -> tuple[int, ...] | None:
        """Each item's class index, known without decoding anything (None for ``pairs``)."""
        return self.index.targets

    def __len__(self) -> int:
        return len(self.index.images)

    def image(self, index: int) -> Tensor:
        """The item's image as stored: uint8 (C, H, W), no transform."""
        raise NotImplementedError

    def target(self, index: int) -> Target:
        """The item's class index or label tensor, no transform."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.image(index), self.target(index)
        if self.transform is None:
            return image, target
        if self._masks:
            from torchvision import tv_tensors  # pyright: ignore[reportMissingTypeStubs]

            joint: tuple[Any, Any] = self.transform(tv_tensors.Image(image), target)
            return joint
        return self.transform(image), target

    @property
    def _masks(self) -> bool:
        labels = self.index.label_members
        return bool(labels) and is_image(labels[0])

    def _decode_image(self, name: str, data: bytes) -> Tensor:
        return decode_image(data, name=name, source=self.source, mode=self.mode)

    def _decode_label(self, name: str, data: bytes) -> Tensor:
        label = decode_label(data, name=name, source=self.source)
        if is_image(name):
            from torchvision import tv_tensors  # pyright: ignore[reportMissingTypeStubs]

            return tv_tensors.Mask(label)
        return label


class LazyImageDataset(ImageDataset):
    """Reads and decodes each item when it is asked for."""

    def image(self, index: int) -> Tensor:
        name = self.index.images[index]
        return self._decode_image(name, self.fetcher.read(name))

    def target(self, index: int) -> Target:
        if self.index.targets is not None:
            return self.index.targets[index]
        name = (self.index.label_members or ())[index]
        return self._decode_label(name, self.fetcher.read(name))


class InMemoryImageDataset(ImageDataset):
    """Decodes every image (and label) once into RAM as uint8 tensors."""

    def __init__(
        self,
        source: str | Path,
        *,
        layout: Layout | LayoutKind = "folders",
        mode: Mode = "rgb",
        transform: Transform | None = None,
        storage: Storage | None = None,
        max_bytes: int | None = None,
        workers: int | None = None,
    ) -> None:
        """Index ``source`` and load it; the arguments are :class:`ImageDataset`'s, and

        Args:
            max_bytes: the memory it may use (default: what this process may still allocate,
                within its cgroup's limit, less a tenth).
            workers: threads decoding images (default: the CPUs this process may use).
        """
        super().__init__(source, layout=layout, mode=mode, transform=transform, storage=storage)
        self._images: list[Tensor] = []
        self._labels: list[Tensor] = []
        available = available_memory() if max_bytes is None else max_bytes
        self._check_estimate(available)
        self._load(available, workers or len(os.sched_getaffinity(0)))
        self.fetcher.close()

    def image(self, index: int) -> Tensor:
        return self._images[index]

    def target(self, index: int) -> Target:
        if self.index.targets is not None:
            return self.index.targets[index]
        return self._labels[index]

    @property
    def nbytes(self) -> int:
        """Bytes the decoded images and labels take."""
        return sum(t.nbytes for t in self._images) + sum(t.nbytes for t in self._labels)

    def _members(self, index: int) -> tuple[str, str | None]:
        labels = self.index.label_members
        return self.index.images[index], labels[index] if labels is not None else None

    def _check_estimate(self, available: int) -> None:
        count = len(self)
        probe = sorted({round(i * (count - 1) / max(1, PROBE - 1)) for i in range(PROBE)})
        sizes: list[int] = []
        for index in probe if count else []:
            image, label = self._members(index)
            size = self._decode_image(image, self.fetcher.read(image)).nbytes
            if label is not None:
                size += self._decode_label(label, self.fetcher.read(label)).nbytes
            sizes.append(size)
        check_fits(estimate_bytes(sizes, count), available, source=self.source, count=count)

    def _load(self, available: int, workers: int) -> None:
        count = len(self)
        image_at = {name: index for index, name in enumerate(self.index.images)}
        label_at = {name: index for index, name in enumerate(self.index.label_members or ())}
        images: list[Tensor] = [torch.empty(0, dtype=torch.uint8)] * count
        labels: list[Tensor] = [torch.empty(0, dtype=torch.uint8)] * len(label_at)
        started, total = time.monotonic(), 0
        for done, (name, tensor) in enumerate(self._decoded(image_at, label_at, workers), 1):
            if name in label_at:
                labels[label_at[name]] = tensor
            else:
                images[image_at[name]] = tensor
            total += tensor.nbytes
            check_fits(total, available, source=self.source, count=count)
            if done % 5000 == 0:
                _log.info("%s: %d of %d members loaded", self.source, done, count + len(labels))
        self._images, self._labels = images, labels
        _log.info(
            "%s: %d images in memory (%s) in %.1f s",
            self.source,
            count,
            format_size(total),
            time.monotonic() - started,
        )

    def _decoded(
        self, image_at: dict[str, int], label_at: dict[str, int], workers: int
    ) -> Iterator[tuple[str, Tensor]]:
        """Members read in the fetcher's cheapest order, decoded on a few threads."""

        def decode(name: str, data: bytes) -> Tensor:
            if name in label_at:
                return self._decode_label(name, data)
            return self._decode_image(name, data)

        window = 4 * workers
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            pending: collections.deque[tuple[str, cf.Future[Tensor]]] = collections.deque()
            for name, data in self.fetcher.items([*image_at, *label_at]):
                pending.append((name, pool.submit(decode, name, data)))
                while len(pending) > window:
                    first, future = pending.popleft()
                    yield first, future.result()
            while pending:
                first, future = pending.popleft()
                yield first, future.result()
