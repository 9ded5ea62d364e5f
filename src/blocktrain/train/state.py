"""Where training stands: the part of a checkpoint that is neither tensors nor settings.

Must not: import torch or hold tensors; it is plain values that a checkpoint stores as they are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from blocktrain.train.config import Mode


@dataclass(kw_only=True, slots=True)
class Progress:
    """Epoch, optimizer step, position inside the epoch, and the monitored metric's record.

    ``position`` counts the micro-batches the current epoch has consumed on each rank. Every
    rank consumes its share of each global batch, so the examples it stands for do not depend
    on the world size.
    """

    epoch: int = 0
    step: int = 0
    position: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: dict[str, list[tuple[int, float]]] = field(
        default_factory=dict[str, list[tuple[int, float]]]
    )
    unlogged: dict[str, tuple[float, int]] = field(default_factory=dict[str, tuple[float, int]])
    """The training totals (sum, count) over every rank since the last logged point: a resume
    takes them up, so that the next point averages the same steps as without the stop."""
    evaluated_at: int | None = None
    """The step of the latest evaluation: a resume at that step does not evaluate again (its
    numbers are kept below), so a run's final metrics do not depend on an interruption."""
    evaluation: dict[str, float] = field(default_factory=dict[str, float])
    """The values of the latest evaluation."""
    confusion: list[list[int]] | None = None
    """The latest evaluation's confusion counts, for the plots at the end."""

    def improves(self, value: float, mode: Mode, min_delta: float = 0.0) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta``."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best - min_delta if mode == "min" else value > self.best + min_delta

    def record(self, name: str, step: int, value: float) -> None:
        """Keep a point of a curve (the plots draw these)."""
        self.history.setdefault(name, []).append((step, value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        history = {
            str(name): [(int(s), float(v)) for s, v in points]
            for name, points in data.get("history", {}).items()
        }
        return cls(
            epoch=int(data["epoch"]),
            step=int(data["step"]),
            position=int(data["position"]),
            best=None if data.get("best") is None else float(data["best"]),
            best_step=None if data.get("best_step") is None else int(data["best_step"]),
            bad_evals=int(data.get("bad_evals", 0)),
            history=history,
            unlogged={
                str(name): (float(total), int(count))
                for name, (total, count) in data.get("unlogged", {}).items()
            },
            evaluated_at=None if data.get("evaluated_at") is None else int(data["evaluated_at"]),
            evaluation={str(k): float(v) for k, v in data.get("evaluation", {}).items()},
            confusion=[[int(c) for c in row] for row in data["confusion"]]
            if data.get("confusion") is not None
            else None,
        )
