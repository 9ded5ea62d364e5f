"""A small, complete entry module: the job ``make demo`` runs.

It trains a little CNN to tell four synthetic shapes apart (horizontal bar, vertical bar,
square, cross) in noisy 16x16 images, so that it needs no download. Run it as
``python -m blocktrain.demo train --args scripts/demo.yaml``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, cast

import blocktrain
from blocktrain.entry import main

if TYPE_CHECKING:
    import torch

CLASSES = ("hbar", "vbar", "square", "cross")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Optim:
    """SGD settings."""

    lr: float = 0.05
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@blocktrain.entrypoint
def train(
    *,
    steps: int = 300,
    batch_size: int = 64,
    width: int = 16,
    noise: float = 0.3,
    optim: Optim = Optim(),
    seed: int = 0,
) -> dict[str, float]:
    """Train a small CNN on synthetic shapes and report validation accuracy.

    Args:
        steps: optimizer steps
        batch_size: images per step
        width: channels of the first convolution
        noise: standard deviation of the pixel noise
        optim: optimizer settings
        seed: seed for data and weights
    """
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # pyright: ignore[reportUnknownMemberType]
    model = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * width, len(CLASSES)),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum)
    for step in range(steps):
        images, labels = shapes(batch_size, noise, generator)
        loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()  # pyright: ignore[reportUnknownMemberType]
        opt.step()  # pyright: ignore[reportUnknownMemberType]
        if step % 20 == 0 or step == steps - 1:
            blocktrain.log_metrics({"train_loss": loss.item()}, step=step)
            print(f"step {step:4d}  loss {loss.item():.4f}")
    images, labels = shapes(1000, noise, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    print(f"validation accuracy {accuracy:.3f}")
    return {"val_accuracy": accuracy}


def shapes(
    count: int, noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` noisy 16x16 images of random shapes at random places, and their labels."""
    import torch

    labels = torch.randint(0, len(CLASSES), (count,), generator=generator)
    images = torch.zeros(count, 1, 16, 16)
    # tolist() is untyped in torch's stubs; these are plain ints.
    corners = cast("list[list[int]]", torch.randint(2, 9, (count, 2), generator=generator).tolist())  # pyright: ignore[reportUnknownMemberType]
    names = cast("list[int]", labels.tolist())  # pyright: ignore[reportUnknownMemberType]
    for i, (label, (y, x)) in enumerate(zip(names, corners, strict=True)):
        if label == 0:
            images[i, 0, y + 2, x : x + 6] = 1
        elif label == 1:
            images[i, 0, y : y + 6, x + 2] = 1
        elif label == 2:
            images[i, 0, y : y + 5, x : x + 5] = 1
        else:
            images[i, 0, y + 2, x : x + 5] = 1
            images[i, 0, y : y + 5, x + 2] = 1
    images += noise * torch.randn(images.shape, generator=generator)
    return images, labels


if __name__ == "__main__":
    main(train)
