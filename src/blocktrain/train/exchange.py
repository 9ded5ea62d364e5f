"""What the ranks exchange at step boundaries: one all-reduce now and then, never waited for.

Under DDP the ranks must decide alike whether to stop and whether a checkpoint is due by the
clock (clocks differ), and the training loss logged every few steps is a mean over every
rank. Each takes an all-reduce, and each all-reduce costs the training thread even when it
does not wait for it: with NCCL a blocking one makes the CPU wait for the GPU, and with Gloo
the mere start of an asynchronous one took 0.2 ms of the training thread on a 2-core
machine, 0.6 ms with each rank on a core of its own (measured with the engine benchmark's
CNN), several percent of steps of a few milliseconds when a loss is logged every 10 steps.

So the ranks exchange everything in one all-reduce (a sum) about every ``poll_every_s``:
their flags, their estimates of how many steps make that interval, and the loss totals of the
log windows closed since the last exchange. It starts at one step boundary and is read at
the next, when it has long finished. A checkpoint, an evaluation and the end of the training
:meth:`Exchange.flush` the windows, so that their points come before what follows.

Must not: wait for an all-reduce in the training thread, or act on what the ranks agree (the
loop does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

from blocktrain.distributed import Reduction
from blocktrain.train.metrics import means

if TYPE_CHECKING:
    from blocktrain.train.metrics import Totals

_HEADER = 3  # stop, checkpoint due, steps to the next exchange


@dataclass(frozen=True, slots=True)
class Agreed:
    """What every rank reads from an exchange, alike."""

    stop: bool
    """Some rank was signalled to stop."""
    checkpoint_due: bool
    """Some rank's clock says a checkpoint is due."""
    steps: int
    """Steps from the exchange's start to the next one: the ranks' mean estimate (at least 1)."""


@dataclass(frozen=True, slots=True)
class Point:
    """A log window's values at step ``index`` (0-based): means over every rank, and this
    rank's own ``lr`` and ``samples_per_s``."""

    index: int
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class _Window:
    index: int
    names: list[str]
    packed: torch.Tensor  # the totals' sums then counts, on the device
    extra: dict[str, float]


class Exchange:
    """The all-reduce of one training's step boundaries (every method is called alike on every
    rank, in the same order: they are collectives or lead to one)."""

    def __init__(self, world: int, device: torch.device) -> None:
        self._world, self._device = world, device
        self._closed: list[_Window] = []
        self._in_flight: tuple[Reduction, list[_Window]] | None = None
        self._agreed: Agreed | None = None  # read early by flush, kept for collect

    @property
    def has_closed(self) -> bool:
        """Whether windows were closed since the last start (or flush)."""
        return bool(self._closed)

    def close(self, index: int, totals: Totals, extra: Mapping[str, float]) -> None:
        """End a log window at step ``index``: keep its totals (started afresh) until an
        exchange carries them. No collective, no wait for the GPU."""
        names, packed = totals.pack()
        self._closed.append(_Window(index, names, packed, dict(extra)))

    def start(self, *, stop: bool = False, checkpoint_due: bool = False, steps: int = 0) -> None:
        """Start exchanging these and the windows closed since the last start (a collective)."""
        if self._in_flight is not None or self._agreed is not None:
            raise RuntimeError("collect the exchange in flight before starting another")
        windows, self._closed = self._closed, []
        header = torch.tensor([stop, checkpoint_due, steps], dtype=torch.float64)
        parts = [header.to(self._device, non_blocking=True), *(w.packed for w in windows)]
        self._in_flight = (Reduction(torch.cat(parts)), windows)

    def collect(self) -> tuple[Agreed | None, list[Point]]:
        """The last exchange's agreement and points: ``(None, [])`` when none was started since
        the last collect. Waits for it if still running (one step after its start, it is
        usually long done)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            agreed, self._agreed = self._agreed, None
            return agreed, []
        return self._finish(*in_flight)

    def flush(self) -> list[Point]:
        """Every window's points now: waits for the exchange in flight (its agreement is kept
        for :meth:`collect`) and reduces the windows closed since (a collective, when any)."""
        points: list[Point] = []
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            self._agreed, points = self._finish(*in_flight)
        if self._closed:
            windows, self._closed = self._closed, []
            reduced = Reduction(torch.cat([w.packed for w in windows])).result()
            points += _points(windows, cast("list[float]", reduced.tolist()))  # pyright: ignore[reportUnknownMemberType]
        return points

    def _finish(self, reduction: Reduction, windows: list[_Window]) -> tuple[Agreed, list[Point]]:
        totals = cast("list[float]", reduction.result().tolist())  # pyright: ignore[reportUnknownMemberType]
        stop, due, steps = totals[:_HEADER]
        agreed = Agreed(stop > 0, due > 0, max(1, round(steps) // self._world))
        return agreed, _points(windows, totals[_HEADER:])


def _points(windows: list[_Window], totals: list[float]) -> list[Point]:
    """Each window's means from its slice of the reduced ``totals``, in order."""
    points: list[Point] = []
    offset = 0
    for window in windows:
        size = 2 * len(window.names)
        values = means(window.names, totals[offset : offset + size])
        points.append(Point(window.index, {**values, **window.extra}))
        offset += size
    return points
