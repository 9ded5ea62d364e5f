"""Entry functions that crash: the crash-loop guard's jobs in the launcher tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

import blocktrain
from blocktrain import restart


@blocktrain.entrypoint
def train(
    *, data: str = "missing-data", steps: int = 20, crash_at_step: int = -1, crashes: int = 1
) -> int:
    """Read the data, then step, polling for a restart at each step boundary.

    Args:
        data: a file read before the first step (a missing one crashes every attempt alike)
        steps: steps in all
        crash_at_step: when not negative, the first ``crashes`` attempts crash alike at this
            step instead of reading the data
        crashes: how many attempts crash at ``crash_at_step``
    """
    if crash_at_step < 0:
        Path(data).read_bytes()
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0")) + 1
    for step in range(steps):
        if step == crash_at_step and attempt <= crashes:
            raise RuntimeError(f"crashed at step {step}")
        time.sleep(0.01)
        blocktrain.log_metrics({"step": float(step)}, step=step)
        if restart.should_stop():
            restart.stop_now()
    return steps
