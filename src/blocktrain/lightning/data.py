"""A DataLoader whose position Lightning and Fabric checkpoint, so that a resume continues
mid-epoch with the very next batch.

Lightning 2 saves and loads the ``state_dict`` of a training DataLoader that has one (its
``_Stateful`` protocol), and Fabric does for any such object in the state it saves. A plain
DataLoader has none: a mid-epoch resume starts the epoch's data again (Lightning warns that it
"is not resumable"), and the weights part from an uninterrupted run's. This one records which
epoch its sampler was on and how many batches it delivered; a resume puts the sampler on that
epoch and skips those batches by their indices, without loading them.

The order within an epoch must depend only on the epoch: a ``DistributedSampler`` (what
Lightning and Fabric put in under DDP) or a :class:`EpochRandomSampler` (what ``shuffle=True``
gives here). The loader's own generator, reseeded from ``seed`` and the epoch, seeds the worker
processes, so that random augmentation in workers repeats too.

Must not: import lightning (the loader is plain torch), or read the process group.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any, cast

import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset, IterableDataset, RandomSampler, Sampler

from blocktrain.errors import BlocktrainError

_SEED_STRIDE = 1_000_003  # apart enough that (seed, epoch) pairs do not meet


class EpochRandomSampler(RandomSampler):
    """A random order drawn from ``seed`` and the epoch alone (``set_epoch``), as a
    ``DistributedSampler``'s is: an epoch's order is the same in every attempt."""

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)  # pyright: ignore[reportUnknownMemberType]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + self.epoch)
        yield from (int(i) for i in torch.randperm(len(self.data_source), generator=generator))


class _Skipping:
    """The loader's index sampler, less its first ``skip`` batches (indices only)."""

    def __init__(self, sampler: Iterable[Any], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.sampler)
        for _ in range(self.skip):
            next(iterator, None)
        yield from iterator

    def __len__(self) -> int:
        return max(0, len(cast(Sized, self.sampler)) - self.skip)


class DataLoader(TorchDataLoader[Any]):
    """``torch.utils.data.DataLoader`` with ``state_dict``/``load_state_dict`` for the position
    in the epoch, and ``seed`` for the order of ``shuffle=True`` and the workers' seeds.

    Takes torch's arguments (Lightning builds it again with its own sampler under DDP). A map-
    style dataset only: an iterable one has no indices to skip.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Sampler[Any] | Iterable[Any] | None = None,
        *args: Any,  # noqa: ANN401 - torch's own arguments, passed on
        seed: int = 0,
        **kwargs: Any,  # noqa: ANN401 - torch's own arguments, passed on
    ) -> None:
        if isinstance(dataset, IterableDataset):
            raise BlocktrainError(
                "blocktrain.lightning.DataLoader needs a map-style dataset (an IterableDataset "
                "has no position to resume at): use a Dataset with __getitem__ and __len__"
            )
        if shuffle and sampler is None:
            sampler, shuffle = EpochRandomSampler(cast(Sized, dataset), seed), None
        # Its own generator (Lightning passes the first one on when it builds the loader again).
        self._generator: torch.Generator = kwargs.setdefault("generator", torch.Generator())
        super().__init__(dataset, batch_size, shuffle, sampler, *args, **kwargs)  # pyright: ignore[reportUnknownMemberType]
        self.seed = seed
        self._epoch = 0  # the epoch of the pass now running
        self._delivered = 0  # its batches handed out
        self._resume: tuple[int, int] | None = None  # (epoch, batches) loaded, for the next pass
        self._shift = 0  # loaded epoch less the epoch the caller set when resuming
        self._skip_next = 0

    @property
    def _index_sampler(self) -> Any:  # noqa: ANN401 - torch's hook where its iterators take their indices
        base = TorchDataLoader._index_sampler.fget(self)  # pyright: ignore[reportAttributeAccessIssue, reportOptionalCall, reportUnknownVariableType]
        return _Skipping(base, self._skip_next) if self._skip_next else base  # pyright: ignore[reportUnknownArgumentType]

    def _samplers(self) -> list[object]:
        """The sampler, and the batch sampler's (Lightning sets the epoch on both)."""
        sampler: object = vars(self).get("sampler")
        inner: object = getattr(vars(self).get("batch_sampler"), "sampler", None)
        return [sampler] if inner is sampler or inner is None else [sampler, inner]

    def _sampler_epoch(self) -> int | None:
        for sampler in self._samplers():
            epoch = getattr(sampler, "epoch", None)
            if isinstance(epoch, int):
                return epoch
        return None

    def _set_sampler_epoch(self, epoch: int) -> None:
        for sampler in self._samplers():
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:  # pyright: ignore[reportIncompatibleMethodOverride]
        # torch's iterator comes from the generator below, whose body runs at the first next():
        # after Lightning has set the epoch.
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        called = self._sampler_epoch()
        skip = 0
        if self._resume is not None:
            (epoch, skip), self._resume = self._resume, None
            # Fabric numbers its passes from 0 again in a new process; Lightning sets the true
            # epoch. The difference, kept, maps the caller's count onto the epochs of the run.
            self._shift = epoch - (called if called is not None else epoch)
        self._epoch = (called if called is not None else self._epoch) + self._shift
        if self._shift:
            self._set_sampler_epoch(self._epoch)
        self._generator.manual_seed(self.seed * _SEED_STRIDE + self._epoch)
        self._skip_next, self._delivered = skip, skip
        iterator = super().__iter__()
        self._skip_next = 0
        for batch in iterator:
            self._delivered += 1
            yield batch

    def roll_over_finished_pass(self) -> None:
        """When the loaded position is the end of its epoch, resume at the next epoch's start.

        For Lightning, which counts such a checkpoint as the end of the epoch and asks the next
        pass for the next epoch; a Fabric loop goes through the finished epoch's (empty) pass
        itself.
        """
        if self._resume is not None and self._resume[1] >= len(self):
            self._resume = (self._resume[0] + 1, 0)

    def state_dict(self) -> dict[str, int]:
        """The epoch of the pass now running and how many of its batches were handed out."""
        return {"epoch": self._epoch, "batches": self._delivered}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at ``state`` on the next pass: its epoch, after its delivered batches."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        self._resume, self._epoch, self._delivered = (epoch, batches), epoch, batches
        self._set_sampler_epoch(epoch)
