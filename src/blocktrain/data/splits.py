"""Deterministic shuffle-splits (e.g. 60/20/20) that come out the same on every machine,
process and Python, numpy or torch version: the order comes from SHA-256 of each item's key
(its member name) and a seed, never from a random number generator.

Two ways to cut:

- ``exact=True`` (default): order the items by hash, then cut at counts rounded by the largest
  remainder, so the sizes match the ratios as closely as whole items allow. Adding items can
  move a few items near the cuts into another split.
- ``exact=False``: each item's hash alone picks its split, so adding or removing items never
  moves the others; the sizes match the ratios only on average.

Must not read data or use a random generator; torch is imported only to build subsets.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from blocktrain.errors import BlocktrainError

if TYPE_CHECKING:
    from torch.utils.data import Dataset, Subset

DEFAULT_SEED = "blocktrain"


def key_hash(key: str, seed: str = DEFAULT_SEED) -> int:
    """A 64-bit number fixed by ``seed`` and ``key``."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def fractions(ratios: Mapping[str, float]) -> dict[str, float]:
    """Ratios (``{"train": 60, "val": 20, "test": 20}`` or 0.6/0.2/0.2) as fractions of 1."""
    if not ratios:
        raise BlocktrainError("no splits given; name at least one, e.g. {'train': 0.8, 'val': 0.2}")
    bad = {name: value for name, value in ratios.items() if not math.isfinite(value) or value < 0}
    if bad or not all(ratios):
        raise BlocktrainError(f"split ratios must be named and not negative, got {dict(ratios)}")
    total = sum(ratios.values())
    if total <= 0:
        raise BlocktrainError(f"split ratios must not all be zero, got {dict(ratios)}")
    return {name: value / total for name, value in ratios.items()}


def split_counts(count: int, shares: Sequence[float]) -> list[int]:
    """Whole counts adding up to ``count``, by the largest remainder (ties: earlier first)."""
    exact = [share * count for share in shares]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for index in by_remainder[: count - sum(counts)]:
        counts[index] += 1
    return counts


def split_indices(
    keys: Sequence[str],
    ratios: Mapping[str, float],
    *,
    seed: str = DEFAULT_SEED,
    exact: bool = True,
) -> dict[str, list[int]]:
    """Positions of ``keys`` in each split, ascending; see the module docstring.

    Args:
        keys: one unique, stable identifier per item (a dataset's ``keys``).
        ratios: split names and their sizes relative to each other.
        seed: another seed gives another, equally stable, shuffle.
        exact: cut by counts (True) or by each item's hash alone (False).
    """
    shares = fractions(ratios)
    repeated = [key for key, times in Counter(keys).items() if times > 1]
    if repeated:
        raise BlocktrainError(
            f"split keys must be unique; {len(repeated)} repeat (e.g. {repeated[0]!r})"
        )
    hashes = [key_hash(key, seed) for key in keys]
    names = list(shares)
    found: dict[str, list[int]] = {name: [] for name in names}
    if exact:
        order = sorted(range(len(keys)), key=lambda i: (hashes[i], keys[i]))
        start = 0
        for name, size in zip(names, split_counts(len(keys), list(shares.values())), strict=True):
            found[name] = sorted(order[start : start + size])
            start += size
        return found
    bounds: list[float] = []
    running = 0.0
    for name in names:
        running += shares[name]
        bounds.append(running)
    for index, value in enumerate(hashes):
        point = value / 2**64
        position = next((i for i, bound in enumerate(bounds) if point < bound), len(names) - 1)
        found[names[position]].append(index)
    return found


def split_dataset(
    dataset: Dataset[Any],
    keys: Sequence[str],
    ratios: Mapping[str, float],
    *,
    seed: str = DEFAULT_SEED,
    exact: bool = True,
) -> dict[str, Subset[Any]]:
    """:func:`split_indices` as torch ``Subset`` objects of ``dataset``."""
    from torch.utils.data import Subset

    return {
        name: Subset(dataset, indices)
        for name, indices in split_indices(keys, ratios, seed=seed, exact=exact).items()
    }
