"""A research project's entry module in miniature: documented functions, one CLI."""

from __future__ import annotations

import dataclasses
import os

import blocktrain
from blocktrain.entry import main


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 0.1
    momentum: float = 0.9


@blocktrain.entrypoint
def train(
    *, epochs: int = 2, optim: Optim = Optim(), note: str = "", fail: bool = False
) -> dict[str, float]:
    """Train for a few epochs.

    Args:
        epochs: passes over the data
        optim: optimizer settings
        note: free text
        fail: raise at the end
    """
    for epoch in range(epochs):
        blocktrain.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
        print(f"epoch {epoch} note={note} env={os.environ.get('BLOCKTRAIN_CANARY_TOKEN')}")
    if fail:
        raise RuntimeError(f"failed with note={note}")
    return {"val_acc": 0.5}


@blocktrain.entrypoint
def evaluate(run_id: str) -> dict[str, float]:
    """Evaluate a run.

    Args:
        run_id: the MLflow run to evaluate
    """
    return {"test_acc": 0.25}


if __name__ == "__main__":
    main(train, evaluate)
