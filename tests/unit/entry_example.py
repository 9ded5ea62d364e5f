"""Entry functions used by the entry tests: typed and documented as researchers write them."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Literal


class Arch(enum.Enum):
    small = 1
    large = 2


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 0.1
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError("lr must be positive")


@dataclasses.dataclass(frozen=True)
class Data:
    root: Path
    splits: tuple[float, ...] = (0.6, 0.2, 0.2)


CALLS: list[dict[str, object]] = []


def train(
    data: Data,
    *,
    epochs: int = 3,
    optim: Optim = Optim(),
    arch: Arch = Arch.small,
    mode: Literal["fast", "exact"] = "fast",
    tags: list[str] | None = None,
    amp: bool = False,
    weights: dict[str, float] | None = None,
    seed: int | None = None,
) -> dict[str, object]:
    """Train a model.

    Args:
        data: where the dataset lives and how to split it
        epochs: passes over the training split
        optim: optimizer settings
        arch: network size
        mode: determinism
        tags: free labels
        amp: mixed precision
        weights: class weights
        seed: random seed
    """
    call: dict[str, object] = {
        "data": data, "epochs": epochs, "optim": optim, "arch": arch, "mode": mode, "tags": tags,
        "amp": amp, "weights": weights, "seed": seed,
    }  # fmt: skip
    CALLS.append(call)
    return call


def evaluate(run_id: str, split: str = "test") -> str:
    """Evaluate a trained run.

    Args:
        run_id: the MLflow run to evaluate
        split: which split
    """
    CALLS.append({"run_id": run_id, "split": split})
    return f"{run_id}:{split}"
