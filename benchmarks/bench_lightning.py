"""Lightning under blocktrain beside plain Lightning, in one run: training speed and the
checkpoint stall.

    .venv/bin/python benchmarks/bench_lightning.py [--rounds N] [--steps N]        (make bench)

One process on the CPU (one torch thread), an MLP of 8 -> 1024 -> 1024 -> 1 with dropout,
batches of 256 from a shuffled in-memory dataset: steps of a few milliseconds, where a per-step
cost shows most. Contenders:

- plain Lightning: ``L.Trainer`` (no logger, no checkpoints, no progress bar) over torch's
  ``DataLoader``;
- blocktrain: ``blocktrain.lightning.trainer`` (its ``Restartable`` callback polling the restart
  protocol at every step, its logger) over ``blocktrain.lightning.DataLoader``, outside a job;
  no periodic checkpoints.

Samples per second are measured over the steps after the first ``WARMUP`` of each fit. Rounds
run the contenders in alternating order; the ratio blocktrain / plain is taken within a round
and its median over rounds printed with its range (goal: >= 0.98).

The checkpoint stall is the time the training thread spends in one checkpoint of the trained
state, after the fit: Lightning's ``trainer.save_checkpoint`` (torch.save to its final name, not
synced) beside ``Restartable.save`` (every rank's random generators, a temporary file, fsync,
rename, checksum file, pruning). Both are synchronous. Asserts nothing; the machine's load
average is printed, since the figures move with it on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import blocktrain.lightning as bl

WARMUP = 20
BATCH = 256


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 1024), nn.Tanh(), nn.Dropout(0.1), nn.Linear(1024, 1024), nn.Tanh(),
            nn.Linear(1024, 1),
        )  # fmt: skip

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


class Clock(Callback):
    """The time at the end of step WARMUP and at the end of the last step."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.steps = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        if trainer.global_step == WARMUP:
            self.start = now
        self.end, self.steps = now, trainer.global_step


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * 64, 8, generator=generator)
    return TensorDataset(x, torch.sin(x.sum(1, keepdim=True)))


def fit(blocktrain: bool, steps: int, folder: Path) -> tuple[float, L.Trainer]:
    torch.manual_seed(0)
    clock = Clock()
    common = {
        "max_steps": steps, "logger": False, "enable_progress_bar": False,
        "enable_model_summary": False, "callbacks": [clock], "accelerator": "cpu",
    }  # fmt: skip
    if blocktrain:
        os.environ["BLOCKTRAIN_CHECKPOINT_DIR"] = str(folder)
        trainer = bl.trainer(**{**common, "logger": True})
        loader = bl.DataLoader(data(), batch_size=BATCH, shuffle=True)
    else:
        trainer = L.Trainer(**common, enable_checkpointing=False, devices=1)
        loader = DataLoader(data(), batch_size=BATCH, shuffle=True)
    trainer.fit(Net(), loader)
    return (clock.steps - WARMUP) * BATCH / (clock.end - clock.start), trainer


def stall(trainer: L.Trainer, blocktrain: bool, folder: Path) -> float:
    start = time.perf_counter()
    if blocktrain:
        [restartable] = [c for c in trainer.checkpoint_callbacks if isinstance(c, bl.Restartable)]
        restartable.save(trainer)
    else:
        trainer.save_checkpoint(folder / "plain.ckpt")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import logging

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ratios, speeds, stalls = [], {True: [], False: []}, {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            measured = {}
            for blocktrain in (round_ % 2 == 0, round_ % 2 == 1):
                folder = Path(tmp) / f"{round_}-{blocktrain}"
                speed, trainer = fit(blocktrain, args.steps, folder)
                measured[blocktrain] = speed
                speeds[blocktrain].append(speed)
                stalls[blocktrain].append(stall(trainer, blocktrain, folder))
            ratios.append(measured[True] / measured[False])
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds of {args.steps} steps")  # noqa: T201
    for blocktrain, name in ((False, "plain Lightning"), (True, "blocktrain.lightning")):
        print(  # noqa: T201
            f"{name:22s} {statistics.median(speeds[blocktrain]):9.0f} samples/s   "
            f"checkpoint stall {1000 * statistics.median(stalls[blocktrain]):7.1f} ms"
        )
    print(  # noqa: T201
        f"samples/s ratio blocktrain/plain: median {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}; goal >= 0.98)"
    )
    print(  # noqa: T201
        "checkpoint stall ratio blocktrain/plain: median "
        f"{statistics.median(stalls[True]) / statistics.median(stalls[False]):.2f}"
    )


if __name__ == "__main__":
    main()
