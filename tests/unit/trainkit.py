"""Small models and data for the training-engine tests: fast on two CPU cores."""

from __future__ import annotations

import hashlib

import torch
from torch import nn
from torch.utils.data import TensorDataset

# Models this small run many times faster on one thread than on two that wait for each other
# on a busy machine.
torch.set_num_threads(1)


def blobs(count: int, seed: int = 0, classes: int = 3) -> TensorDataset:
    """``count`` 1x6x6 images whose mean brightness tells their class, and the classes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (count,), generator=generator)
    images = torch.randn(count, 1, 6, 6, generator=generator) * 0.5 + labels.view(-1, 1, 1, 1)
    return TensorDataset(images, labels)


class TinyNet(nn.Module):
    """A convolution, dropout (so that random state matters) and a linear classifier."""

    def __init__(self, classes: int = 3, dropout: float = 0.2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * 36, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.conv(x))).flatten(1))


def digest(model: nn.Module) -> str:
    """A fingerprint of the exact bits of every parameter and buffer."""
    state = model.state_dict()
    hashed = hashlib.sha256()
    for name in sorted(state):
        hashed.update(name.encode())
        hashed.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return hashed.hexdigest()
