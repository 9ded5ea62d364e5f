"""Evaluating a model: its metrics over this rank's batches, reduced over every rank.

Must not: load checkpoints, log to the run or write files; :class:`~blocktrain.train.loop.
Trainer` and :mod:`blocktrain.train.inference` do that with what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from blocktrain.train import batching
from blocktrain.train.device import autocast
from blocktrain.train.metrics import Confusion, MetricFn, Totals, is_classification

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    LossFn = Callable[[Any, Any], torch.Tensor]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Metrics over every rank, and a classifier's confusion counts."""

    values: dict[str, float]
    confusion: torch.Tensor | None = None


def evaluate_model(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device,
    loss_fn: LossFn | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
    prefix: str = "val",
    precision: str = "fp32",
    channels_last: bool = False,
) -> Evaluation:
    """Metrics of ``model`` over this rank's ``batches``, reduced over all ranks (a collective).

    Names are ``{prefix}_{metric}`` in the order given, then ``{prefix}_loss``.
    """
    totals = Totals(device)
    confusion: Confusion | None = None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in batches:
            inputs, targets = batching.split_batch(
                batching.to_device(batch, device, channels_last=channels_last)
            )
            with autocast(device, precision):
                outputs = model(inputs)
                loss = loss_fn(outputs, targets) if loss_fn is not None else None
            for name, metric in (metrics or {}).items():
                totals.add(f"{prefix}_{name}", metric(outputs, targets))
            if loss is not None:
                totals.add_mean(f"{prefix}_loss", loss, batching.batch_size_of(inputs))
            if is_classification(outputs, targets):
                confusion = confusion or Confusion(int(outputs.shape[1]), device)
                confusion.add(outputs, targets)
    model.train(was_training)
    return Evaluation(totals.reduce(), confusion.reduce() if confusion is not None else None)
