"""Per-rank data: each epoch's shard of a seeded permutation, resumable at any batch.

A dataset is shared out as ``DistributedSampler`` does (seeded by the seed and the epoch, so
every rank computes the same permutation and takes every world-size-th example); the
DataLoader gets the rank's index list minus the batches already consumed, so resuming
mid-epoch reads none of them again. Evaluation shards are strided without padding, so every
example counts exactly once. A DataLoader built by the caller is used as it is.

Must not: fetch or cache dataset files (that is :mod:`blocktrain.data`), or train.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias, cast

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from blocktrain.errors import BlocktrainError
from blocktrain.train.config import TrainConfig

Data: TypeAlias = "Dataset[Any] | DataLoader[Any]"
# Per-epoch generators are derived from the seed this way, apart from the sampler's own.
_EPOCH_STRIDE = 1_000_003


def dataset_length(dataset: Dataset[Any]) -> int:
    try:
        return len(cast("Sequence[object]", dataset))
    except TypeError:
        raise BlocktrainError(
            f"{type(dataset).__name__} has no len(); pass a map-style dataset or your own "
            "DataLoader"
        ) from None


def _loader(
    dataset: Dataset[Any], indices: list[int], batch: int, **options: object
) -> DataLoader[Any]:
    return DataLoader(dataset, batch_size=batch, sampler=indices, **options)  # pyright: ignore[reportArgumentType]


def train_indices(
    dataset: Dataset[Any], config: TrainConfig, epoch: int, rank: int, world: int
) -> list[int]:
    """This rank's examples of ``epoch`` in order: the epoch's permutation, every world-th."""
    sampler = DistributedSampler[int](
        dataset,
        num_replicas=world,
        rank=rank,
        shuffle=config.shuffle,
        seed=config.seed,
        drop_last=config.drop_last,
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def train_batches(
    data: Data,
    config: TrainConfig,
    *,
    epoch: int,
    skip: int,
    rank: int,
    world: int,
    pin_memory: bool,
) -> Iterator[Any]:
    """The micro-batches of ``epoch`` for this rank, after the first ``skip`` of them."""
    if isinstance(data, DataLoader):
        sampler = cast("object", data.sampler)
        set_epoch = getattr(sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        return itertools.islice(iter(cast("Iterable[Any]", data)), skip, None)
    micro = config.micro_batch(world)
    indices = train_indices(data, config, epoch, rank, world)[skip * micro :]
    loader = _loader(
        data,
        indices,
        micro,
        drop_last=config.drop_last,
        num_workers=config.num_workers,
        pin_memory=pin_memory,
        # Worker seeds come from this generator, not from torch's global one, whose state
        # belongs to the training and is restored on resume.
        generator=torch.Generator().manual_seed(config.seed * _EPOCH_STRIDE + epoch),
    )
    return iter(cast("Iterable[Any]", loader))


def batches_per_epoch(data: Data, config: TrainConfig, world: int) -> int:
    """Micro-batches each rank consumes in one epoch."""
    if isinstance(data, DataLoader):
        return len(data)
    micro = config.micro_batch(world)
    dataset_length(data)  # a clear error for datasets without len()
    shard = DistributedSampler[int](data, num_replicas=world, rank=0, drop_last=config.drop_last)
    return len(shard) // micro if config.drop_last else -(-len(shard) // micro)


def planned_steps(data: Data, config: TrainConfig, world: int) -> int:
    """The optimizer steps a training on ``data`` with ``world`` ranks takes: every epoch's,
    capped by ``max_steps``; what a learning-rate schedule built before ``fit`` spans."""
    per_epoch = -(-batches_per_epoch(data, config, world) // config.grad_accum_steps)
    steps = per_epoch * config.epochs
    return min(steps, config.max_steps or steps)


def eval_batches(
    data: Data, batch: int, *, rank: int, world: int, num_workers: int, pin_memory: bool
) -> tuple[Iterable[Any], list[int] | None]:
    """This rank's evaluation batches, and the dataset indices they hold (None for a loader).

    Rank r takes examples r, r + world, ... in order: no padding, no duplicate.
    """
    if isinstance(data, DataLoader):
        return cast("Iterable[Any]", data), None
    length = dataset_length(data)
    if length < world:
        raise BlocktrainError(
            f"the evaluation data has {length} example(s) for {world} ranks; give every rank "
            "at least one"
        )
    indices = list(range(rank, length, world))
    loader = _loader(data, indices, batch, num_workers=num_workers, pin_memory=pin_memory)
    return cast("Iterable[Any]", loader), indices


def to_device(batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:  # noqa: ANN401
    """Move the tensors of a batch (nested in tuples, lists, mappings) to ``device``.

    Copies from pinned memory overlap with computation (``non_blocking``); 4-d float tensors
    become channels-last when asked.
    """
    if isinstance(batch, torch.Tensor):
        moved = batch.to(device, non_blocking=True)
        if channels_last and moved.dim() == 4 and moved.is_floating_point():
            moved = moved.contiguous(memory_format=torch.channels_last)
        return moved
    if isinstance(batch, Mapping):
        items = cast("Mapping[Any, Any]", batch)
        return {k: to_device(v, device, channels_last=channels_last) for k, v in items.items()}
    if isinstance(batch, list | tuple):
        moved_items = [
            to_device(v, device, channels_last=channels_last) for v in cast("Sequence[Any]", batch)
        ]
        return moved_items if isinstance(batch, list) else tuple(moved_items)
    return batch


def split_batch(batch: Any) -> tuple[Any, Any]:  # noqa: ANN401
    """``(inputs, targets)`` of a batch; a batch that is not a pair has no targets."""
    parts = cast("Sequence[Any]", batch) if isinstance(batch, list | tuple) else None
    if parts is not None and len(parts) == 2:
        return parts[0], parts[1]
    if parts is not None and len(parts) == 1:
        return parts[0], None
    return cast("Any", batch), None


def batch_size_of(inputs: Any) -> int:  # noqa: ANN401
    """Examples in a batch: the first dimension of its first tensor."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, Mapping):
        return batch_size_of(next(iter(cast("Mapping[Any, Any]", inputs).values())))
    if isinstance(inputs, list | tuple):
        return batch_size_of(cast("Sequence[Any]", inputs)[0])
    raise BlocktrainError(
        f"cannot tell the batch size of a {type(inputs).__name__}; batches must hold tensors"
    )
