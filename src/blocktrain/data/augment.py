"""Standard image transforms with torchvision.transforms.v2, on uint8 tensors: geometry and
colour work on uint8 (cheap), conversion to float and normalization come last.

Must not read, decode or cache data; torchvision is imported when a pipeline is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def train_transforms(
    size: int | tuple[int, int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.5, 1.0),
    flip: bool = True,
) -> Any:  # noqa: ANN401 - torchvision ships no type information
    """Random resized crop, optional horizontal flip, then float in [0, 1] normalized with
    ``mean`` and ``std`` (from ``blocktrain.data.stats``)."""
    import torch
    from torchvision.transforms import v2  # pyright: ignore[reportMissingTypeStubs]

    steps: list[Any] = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def eval_transforms(
    size: int | tuple[int, int], *, mean: Sequence[float], std: Sequence[float]
) -> Any:  # noqa: ANN401 - torchvision ships no type information
    """Resize and centre crop to ``size``, then float in [0, 1] normalized like training."""
    import torch
    from torchvision.transforms import v2  # pyright: ignore[reportMissingTypeStubs]

    return v2.Compose(
        [
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
