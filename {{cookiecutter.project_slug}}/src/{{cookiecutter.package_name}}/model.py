"""The network: torchvision's MobileNetV3-Small, trained from scratch, and its optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True, kw_only=True)
class Model:
    """The network's shape."""

    width: float = 0.5
    """channel multiplier of every layer (MobileNetV3's ``width_mult``)"""
    dropout: float = 0.2
    """dropout before the classifier"""

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True, kw_only=True)
class Optim:
    """AdamW, with the learning rate on a cosine from ``lr`` to zero over the training."""

    lr: float = 0.01
    """peak learning rate"""
    weight_decay: float = 0.01
    """decoupled weight decay"""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be positive and weight_decay >= 0, got {self}")


def build(model: Model, classes: int) -> nn.Module:
    """A freshly initialised MobileNetV3-Small with ``classes`` outputs."""
    from functools import partial

    from torch import nn
    from torchvision.models import mobilenet_v3_small  # pyright: ignore[reportMissingTypeStubs]

    network: nn.Module = mobilenet_v3_small(
        num_classes=classes,
        width_mult=model.width,
        dropout=model.dropout,
        # torchvision's momentum of 0.01 suits long trainings; in a short one the running
        # statistics would lag far behind the weights and evaluation would see stale ones.
        norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.1),
    )
    return network


def optimizer(
    network: nn.Module, optim: Optim, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the network's parameters and its cosine schedule over ``steps`` steps."""
    import torch

    adamw = torch.optim.AdamW(network.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    return adamw, torch.optim.lr_scheduler.CosineAnnealingLR(adamw, T_max=max(1, steps))
