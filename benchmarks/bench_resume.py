"""Resume cost: seconds from process start to the first training step, resuming or not.

    .venv/bin/python benchmarks/bench_resume.py        (make bench)

A child process builds the ~500 MB model of bench_checkpoint.py (eight 4096x4096 linear
layers, SGD with momentum: a 1.07 GB checkpoint) and trains it with the engine; its loss
function reports the wall-clock time of its first call. The parent measures from just
before starting the child: once with an empty checkpoint folder (a fresh start), once with
a checkpoint in it (the resume verifies the checksum, loads it and restores the state), and
again each way, keeping the faster of the two. Prints both and their difference; asserts
nothing. BLOCKTRAIN_BENCH_DIR names the folder to write in (default: a temporary one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
LAYERS = 8
WIDTH = 4096
REPEATS = 2


def child(folder: Path, steps: int) -> None:
    """Train up to ``steps`` steps, checkpointing every step; print when the first one runs."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from blocktrain.train import TrainConfig, Trainer
    from blocktrain.train.checkpoint.files import CheckpointConfig

    torch.set_num_threads(1)
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])
    first: list[float] = []

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not first:
            first.append(time.time())
            print(f"FIRST_STEP {first[0]}", flush=True)  # noqa: T201
        return nn.functional.mse_loss(outputs, targets)

    data = TensorDataset(torch.randn(16, WIDTH), torch.randn(16, WIDTH))
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9),
        loss_fn,
        config=TrainConfig(epochs=1, max_steps=steps, batch_size=4, log_every_steps=1000),
        checkpoint=CheckpointConfig(folder=folder, every_steps=1, keep_last=1),
    )
    trainer.fit(data)


def start_to_first_step(folder: Path, steps: int) -> float:
    started = time.time()
    done = subprocess.run(
        [sys.executable, str(HERE), "--child", str(folder), str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split("FIRST_STEP ", 1)[1].split()[0]) - started


def main() -> None:
    if "--child" in sys.argv:
        child(Path(sys.argv[2]), int(sys.argv[3]))
        return
    fresh, resumed = float("inf"), float("inf")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BLOCKTRAIN_BENCH_DIR")) as tmp:
        for attempt in range(REPEATS):
            folder = Path(tmp) / f"run{attempt}"
            fresh = min(fresh, start_to_first_step(folder, 1))  # leaves the step-1 checkpoint
            resumed = min(resumed, start_to_first_step(folder, 2))
        size = sum(p.stat().st_size for p in (Path(tmp) / "run0").glob("step-*.pt")) / 1e6
    print(  # noqa: T201
        f"start to first step, {LAYERS} x Linear({WIDTH}, {WIDTH}) on the CPU, best of "
        f"{REPEATS}: fresh start {fresh:.2f} s, resuming from a {size:.0f} MB checkpoint "
        f"{resumed:.2f} s (+{resumed - fresh:.2f} s, ratio {resumed / fresh:.2f})"
    )


if __name__ == "__main__":
    main()
