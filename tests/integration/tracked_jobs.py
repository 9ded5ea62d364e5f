"""Tracked functions run by the tracking tests, in-process or as a child process."""

from __future__ import annotations

import json
import sys
import time

from blocktrain.track import current, log_metrics, track


@track
def train(epochs: int = 3, lr: float = 0.1, note: str = "") -> dict[str, float]:
    """Log a loss per epoch, print to both streams, return a final metric."""
    for epoch in range(epochs):
        log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
        print(f"epoch {epoch} note={note}")
    print("training done", file=sys.stderr)
    return {"val_acc": 0.75}


@track
def crash(message: str = "boom") -> None:
    """Fail after some output."""
    print("about to fail")
    raise ValueError(message)


@track
def sleeper(seconds: float = 60.0) -> None:
    """Announce the run id, then wait to be killed."""
    tracker = current()
    assert tracker is not None
    deadline = time.monotonic() + 15
    while tracker.run_id is None and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"RUN_ID={tracker.run_id}", flush=True)
    time.sleep(seconds)


if __name__ == "__main__":
    # argv: function name, then JSON keyword arguments
    function = {"train": train, "crash": crash, "sleeper": sleeper}[sys.argv[1]]
    function(**(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
