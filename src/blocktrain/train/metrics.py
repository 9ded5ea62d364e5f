"""Metrics that stay correct across ranks: sums and counts are reduced, then divided once.

A metric function takes a batch's model outputs and targets and returns one value per
example (``accuracy`` returns 1.0 or 0.0 for each). Each rank adds up values and counts; one
all-reduce adds the ranks' totals; the mean is their quotient. Averaging per-rank averages
would weigh a rank with fewer examples as much as a full one; this never does.

Must not: log or print; the caller decides what to do with the values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, cast

import torch
import torch.distributed as dist

from blocktrain.distributed import Reduction

MetricFn: TypeAlias = Callable[[Any, Any], torch.Tensor]
"""``(outputs, targets) -> values``, one value per example."""


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class Totals:
    """Running sums and counts per metric name on one rank, kept on the device (no sync).

    Adding only keeps a reference to the value: a training step pays for a list append, not
    for a kernel (on a CPU, a few microseconds of a step of a few milliseconds). The values are
    folded into sums in one go when reduced, or every ``_FOLD`` additions to bound memory.
    """

    _FOLD = 256

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._values: dict[str, list[torch.Tensor]] = {}
        self._weights: dict[str, list[float]] = {}
        self._counts: dict[str, int] = {}

    def add(self, name: str, values: torch.Tensor) -> None:
        """Add per-example values (any shape: every element counts as one)."""
        self._add(name, values.detach().sum(dtype=torch.float64), 1, values.numel())

    def add_mean(self, name: str, mean: torch.Tensor, count: int) -> None:
        """Add a mean over ``count`` examples (a batch's mean loss)."""
        self._add(name, mean.detach(), count, count)

    def add_total(self, name: str, total: float, count: int) -> None:
        """Add a sum over ``count`` examples (totals carried over from elsewhere)."""
        value = torch.tensor(total, dtype=torch.float64, device=self._device)
        self._add(name, value, 1, count)

    def _add(self, name: str, value: torch.Tensor, weight: int, count: int) -> None:
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = []
            self._weights[name], self._counts[name] = [], 0
        values.append(value)
        self._weights[name].append(weight)
        self._counts[name] += count
        if len(values) >= self._FOLD:
            self._values[name], self._weights[name] = [self._sum(name)], [1.0]

    def _sum(self, name: str) -> torch.Tensor:
        """The weighted sum of a name's values, in float64, on the device (no sync)."""
        values = torch.stack([value.reshape(()) for value in self._values[name]])
        weights = torch.tensor(self._weights[name], dtype=torch.float64)
        return values.to(torch.float64).dot(weights.to(self._device, non_blocking=True))

    def __bool__(self) -> bool:
        return bool(self._values)

    def reduce(self) -> dict[str, float]:
        """Means over every rank (a collective: every rank calls it, with the same names)."""
        return means(*self._reduced())

    def reduce_sums(self) -> dict[str, tuple[float, int]]:
        """Each name's sum and count over every rank (a collective, like :meth:`reduce`)."""
        names, totals = self._reduced()
        count = len(names)
        return {name: (totals[i], round(totals[count + i])) for i, name in enumerate(names)}

    def _reduced(self) -> tuple[list[str], list[float]]:
        """The names, and their sums then counts added over the ranks; start afresh."""
        names, packed = self.pack()
        return names, cast("list[float]", Reduction(packed).result().tolist())  # pyright: ignore[reportUnknownMemberType]

    def pack(self) -> tuple[list[str], torch.Tensor]:
        """The names, and their sums then their counts in one float64 tensor on the device,
        ready for an all-reduce; start afresh. No collective, no wait for the GPU."""
        names = list(self._values)
        counts = torch.tensor([self._counts[n] for n in names], dtype=torch.float64)
        sums = [self._sum(n) for n in names]
        packed = torch.cat([torch.stack(sums) if sums else counts[:0], counts.to(self._device)])
        self._values, self._weights, self._counts = {}, {}, {}
        return names, packed


def means(names: list[str], totals: list[float]) -> dict[str, float]:
    """Each name's sum divided by its count, from what :meth:`Totals.pack` packed (reduced)."""
    count = len(names)
    sums, counts = totals[:count], totals[count:]
    return {
        name: (total / number if number else float("nan"))
        for name, total, number in zip(names, sums, counts, strict=True)
    }


class Confusion:
    """A classifier's confusion counts (rows: true class, columns: predicted), over all ranks."""

    def __init__(self, classes: int, device: torch.device) -> None:
        self.classes = classes
        self._counts = torch.zeros(classes * classes, dtype=torch.int64, device=device)

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        predicted = outputs.detach().argmax(dim=-1).reshape(-1)
        pairs = targets.detach().reshape(-1).to(torch.int64) * self.classes + predicted
        self._counts += torch.bincount(pairs, minlength=self.classes * self.classes)

    def reduce(self) -> torch.Tensor:
        """The summed matrix on every rank, on the CPU (a collective)."""
        return _all_reduce(self._counts.clone()).reshape(self.classes, self.classes).cpu()


def is_classification(outputs: object, targets: object) -> bool:
    """Logits ``[batch, classes]`` against integer labels ``[batch]``."""
    return (
        isinstance(outputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and outputs.dim() == 2
        and outputs.is_floating_point()
        and targets.dim() == 1
        and not targets.is_floating_point()
        and outputs.shape[0] == targets.shape[0]
    )


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1.0 for each example whose highest-scoring class is its label, else 0.0."""
    return (outputs.argmax(dim=-1) == targets).to(torch.float32)
