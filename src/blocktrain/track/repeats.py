"""Which metric points repeat ones that a run already holds, so that each point (key, step) of a
run is there once however its attempts end.

An attempt killed between two checkpoints (SIGKILL, a lost node, a killed job) leaves the run
holding the points it sent after its last checkpoint; the next attempt resumes from that
checkpoint and computes the same steps again, with the same values (resumes are
bit-identical). Two rules keep those points from coming twice:

- **While an attempt runs** (:func:`drop_repeats`): a point at or below the highest step that
  its key held when the attempt began is a repeat. The writer sends an attempt's points in
  order, so what a run holds of an attempt is everything up to the last point that got
  through; one number per key says so, and one request (the run itself) reads them all.
- **When a spill file is replayed** (:func:`keys_to_read`, :func:`drop_held`): later attempts
  may have logged past its points while it waited, so only a point whose very step the run
  holds is a repeat. The history of a key is read only when the run holds that key at or above
  the lowest step that the file has of it, which an outage's file usually does not.

A point logged without a step is at step 0, as in MLflow.

Pure: the writer (:mod:`blocktrain.track.writer`) reads the run and applies these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

MetricItem = Sequence[Any]
"""A queued or spilled metric point: ``[key, value, timestamp_ms, step]``."""


def key_step(item: MetricItem) -> tuple[str, int]:
    return str(item[0]), int(item[3] or 0)


def highest_steps(points: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Per key, the highest step among ``(key, step)`` points."""
    highest: dict[str, int] = {}
    for key, step in points:
        if key not in highest or step > highest[key]:
            highest[key] = step
    return highest


def lowest_steps(items: Iterable[MetricItem]) -> dict[str, int]:
    """Per key, the lowest step among metric points."""
    lowest: dict[str, int] = {}
    for key, step in map(key_step, items):
        if key not in lowest or step < lowest[key]:
            lowest[key] = step
    return lowest


def drop_repeats(items: Sequence[MetricItem], held: Mapping[str, int]) -> list[MetricItem]:
    """The points of a resumed attempt that are not repeats: those above the highest step
    their key held (``held``) when the attempt began."""
    kept: list[MetricItem] = []
    for item in items:
        key, step = key_step(item)
        if key not in held or step > held[key]:
            kept.append(item)
    return kept


def keys_to_read(lowest: Mapping[str, int], latest: Mapping[str, int]) -> list[str]:
    """The keys whose history a replay must read: those the run holds (``latest``: the highest
    step of each key) at or above the lowest step the spilled points have of them
    (``lowest``). For any other key, no spilled step can be in the run."""
    return sorted(key for key, step in lowest.items() if key in latest and latest[key] >= step)


def drop_held(items: Sequence[MetricItem], held: Mapping[str, Set[int]]) -> list[MetricItem]:
    """The spilled points whose step the run does not hold (``held``: the steps of each key
    read from the run; a key left out holds none of them)."""
    kept: list[MetricItem] = []
    for item in items:
        key, step = key_step(item)
        if step not in held.get(key, ()):
            kept.append(item)
    return kept
