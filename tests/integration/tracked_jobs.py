"""Tracked functions run by the tracking tests, in-process or as a child process."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

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


@track
def resumable(steps: int = 12, checkpoint_every: int = 4) -> dict[str, float]:
    """Log a loss per step from the newest checkpoint (a file in the working folder). At step
    ``$KILL_AT_STEP``, once MLflow holds every point so far, die by SIGKILL, as on a lost node."""
    saved = Path("checkpoint.txt")
    start = int(saved.read_text()) if saved.exists() else 0
    kill_at = int(os.environ.get("KILL_AT_STEP", "-1"))
    for step in range(start, steps):
        log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        if step == kill_at:
            tracker = current()
            assert tracker is not None
            assert tracker.writer is not None
            assert tracker.writer.flush(60)
            os.kill(os.getpid(), signal.SIGKILL)
        if (step + 1) % checkpoint_every == 0:
            saved.write_text(str(step + 1))
    return {"final_loss": 1.0 / steps}


if __name__ == "__main__":
    # argv: function name, then JSON keyword arguments
    jobs = {"train": train, "crash": crash, "sleeper": sleeper, "resumable": resumable}
    function = jobs[sys.argv[1]]
    function(**(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
