"""Checkpoint cost for a ~500 MB state: blocktrain beside torch.save and DCP, in one run.

    .venv/bin/python benchmarks/bench_checkpoint.py [--rounds N]        (make bench)

The model is eight 4096x4096 linear layers (537 MB of float32 weights), trained with plain
SGD on the CPU with one thread. Each contender checkpoints the same state while training goes
on:

- ``torch.save`` to a file (the baseline: it may return while the data is still only in the
  page cache, so it is not durable);
- ``torch.distributed.checkpoint``: ``dcp.save`` and ``dcp.async_save`` (one process, no
  process group; both fsync);
- blocktrain: ``checkpoint.save`` (synchronous: atomic, fsync, checksum) and
  ``Checkpointer.save`` in the background, as the engine saves (parameters copied by the
  background thread while the next forward and backward passes run; an earlier checkpoint
  marked best, which pruning keeps).

The whole cost of one checkpoint is its stall (seconds the training thread spends in the save
call and, for blocktrain, waiting for the copies before the next optimizer step) plus the time
the training steps lose while a background write runs (each step during the write beside the
median step of the same contender without one). The CPU column is the CPU time that is not the
training steps' from the save call to the end of the write: what the checkpoint took from the
cores. Rounds run the contenders in rotated order; ratios to ``torch.save`` are taken within a
round, and the median over rounds is printed with its range. Before the rounds, the phases of
a background write are timed alone (no training): where its time goes.

Asserts nothing (goals: blocktrain's stall <= 0.01 x torch.save's; its whole cost <= DCP
async_save's). The machine's load average is printed: on a shared machine the figures move
with it. BLOCKTRAIN_BENCH_DIR names the folder to write in (default: a temporary one).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAYERS = 8
WIDTH = 4096
BATCH = 8
INTERVAL_S = 300.0
NORMAL_STEPS = 3
ROUNDS = 6
BASELINE = "torch.save"
PEER = "dcp.async_save"
OURS = "blocktrain async"


@dataclass
class Training:
    model: Any
    optimizer: Any
    batch: Any

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}


@dataclass
class Write:
    """A checkpoint under way: whether it still writes, and what a step must wait for."""

    busy: Callable[[], bool] = lambda: False
    before_update: Callable[[], None] = lambda: None
    finish: Callable[[], None] = lambda: None


@dataclass
class Cost:
    stall: float
    lost: float
    cpu: float
    write: float

    @property
    def whole(self) -> float:
        return self.stall + self.lost


Contender = Callable[[Training, Path], Write]


def training() -> Training:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    return Training(model, optimizer, torch.randn(BATCH, WIDTH))


def step(train: Training, write: Write | None = None) -> tuple[float, float]:
    """One training step: (seconds outside the wait for the checkpoint's copies, that wait)."""
    start = time.perf_counter()
    loss = train.model(train.batch).square().mean()
    train.optimizer.zero_grad()
    loss.backward()
    waited = 0.0
    if write is not None:
        wait_start = time.perf_counter()
        write.before_update()
        waited = time.perf_counter() - wait_start
    train.optimizer.step()
    return time.perf_counter() - start - waited, waited


def torch_save(train: Training, folder: Path) -> Write:
    import torch

    torch.save(train.state(), folder / "plain.pt")
    return Write()


def dcp_save(train: Training, folder: Path) -> Write:
    from torch.distributed.checkpoint.state_dict_saver import save

    save(train.state(), checkpoint_id=folder / "dcp")
    return Write()


def dcp_async_save(train: Training, folder: Path) -> Write:
    from torch.distributed.checkpoint.state_dict_saver import async_save

    future: Any = async_save(train.state(), checkpoint_id=folder / "dcp-async")
    return Write(busy=lambda: not future.done(), finish=future.result)


def blocktrain_save(train: Training, folder: Path) -> Write:
    from blocktrain.train.checkpoint import files

    files.save(train.state(), folder / "sync", 1)
    return Write()


def blocktrain_async(saver: Any) -> Contender:  # noqa: ANN401
    from blocktrain.train.checkpoint.saver import Best, storage_address

    steps = iter(range(1, 1 << 30))

    def save(train: Training, folder: Path) -> Write:
        tensors = [*train.model.parameters()]
        tensors += [v for state in train.optimizer.state.values() for v in state.values()]
        late = frozenset(storage_address(t) for t in tensors)
        step = next(steps)
        # The first (the warm-up) is the best, as after a validation: later saves keep it.
        best = Best("val_loss", 0.5) if step == 1 else None
        saver.save(train.state(), step, late=late, best=best)
        return Write(busy=lambda: saver.busy, before_update=saver.before_update, finish=saver.wait)

    return save


def measure(contender: Contender, train: Training, folder: Path) -> Cost:
    before = [step(train)[0] for _ in range(NORMAL_STEPS)]
    start, cpu_start = time.perf_counter(), time.process_time()
    write = contender(train, folder)
    stall = time.perf_counter() - start
    during: list[float] = []
    training_cpu = 0.0
    while write.busy():
        thread_start = time.thread_time()
        took, waited = step(train, write)
        training_cpu += time.thread_time() - thread_start
        stall += waited
        during.append(took)
    write.finish()
    cpu = time.process_time() - cpu_start - training_cpu
    write_s = time.perf_counter() - start
    after = [step(train)[0] for _ in range(NORMAL_STEPS)]
    normal = statistics.median(before + after)
    return Cost(stall, sum(d - normal for d in during), cpu, write_s)


def settle(folder: Path) -> None:
    """Remove what a contender wrote and flush the rest, so that no write-back of one
    contender's files runs during the next one's measurement."""
    for path in [*folder.glob("plain.pt"), *folder.glob("dcp*")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.sync()


def timed(action: Callable[[], object], repeats: int = 2) -> tuple[float, float]:
    """Best wall seconds of ``repeats`` runs, with that run's CPU seconds."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        action()
        best = min(best, (time.perf_counter() - start, time.process_time() - cpu_start))
    return best


def phases(train: Training, folder: Path) -> list[tuple[str, tuple[float, float]]]:
    """The parts of a background write, each alone: (what, (wall s, CPU s))."""
    import torch
    from torch.utils.serialization import config

    patch: Any = getattr(config, "patch")  # noqa: B009 - set up at import, unknown to the checker
    state = train.state()
    buffers = {k: v.clone() for k, v in state["model"].items()}
    path = folder / "phase.pt"

    def copy() -> None:
        for key, tensor in state["model"].items():
            buffers[key].copy_(tensor)

    def save_without_crc() -> None:
        with patch({"save.compute_crc32": False}):
            torch.save(state, path)

    def hash_file() -> None:
        with path.open("rb") as file:
            hashlib.file_digest(file, "sha256")

    def fsync() -> None:
        torch.save(state, path)
        descriptor = os.open(path, os.O_RDONLY)
        os.fsync(descriptor)
        os.close(descriptor)

    saved = timed(lambda: torch.save(state, path))
    found = [
        ("copy into CPU buffers (memcpy)", timed(copy)),
        ("torch.save to the page cache (with CRC-32)", saved),
        ("torch.save without CRC-32", timed(save_without_crc)),
        ("SHA-256 reading the file again", timed(hash_file)),
        ("blocktrain's serialise + hash + fsync", timed(lambda: _files_save(state, folder))),
    ]
    with_sync = timed(fsync)
    found.append(("fsync of a written file", (with_sync[0] - saved[0], with_sync[1] - saved[1])))
    path.unlink()
    return found


def _files_save(state: dict[str, Any], folder: Path) -> None:
    from blocktrain.train.checkpoint import files

    files.save(state, folder / "phases", 1)


def report(costs: dict[str, list[Cost]], size_mb: float, rounds: int) -> None:
    base = costs[BASELINE]
    print(  # noqa: T201
        f"\n{size_mb:.0f} MB state, {rounds} rounds; medians, ratios to {BASELINE} within a round "
        f"(range over rounds)\n"
        f"{'contender':<18} {'stall s':>8} {'lost s':>7} {'whole s':>8} {'CPU s':>6} "
        f"{'write s':>8}  {'whole / torch.save':<24} stall / torch.save"
    )
    for name, cost in costs.items():
        whole = [c.whole / b.whole for c, b in zip(cost, base, strict=True)]
        stall = [c.stall / b.whole for c, b in zip(cost, base, strict=True)]
        figures = [statistics.median(getattr(c, f) for c in cost) for f in ("stall", "lost")]
        median_whole = statistics.median(c.whole for c in cost)
        cpu = statistics.median(c.cpu for c in cost)
        write = statistics.median(c.write for c in cost)
        print(  # noqa: T201
            f"{name:<18} {figures[0]:8.3f} {figures[1]:7.3f} {median_whole:8.3f} {cpu:6.2f} "
            f"{write:8.2f}  {spread(whole):<24} {spread(stall)}"
        )
    ours = [c.whole / p.whole for c, p in zip(costs[OURS], costs[PEER], strict=True)]
    print(  # noqa: T201
        f"{OURS} whole cost / {PEER}'s: {spread(ours)} (goal <= 1); one checkpoint every "
        f"{INTERVAL_S / 60:.0f} minutes costs "
        f"{100 * statistics.median(c.whole for c in costs[OURS]) / INTERVAL_S:.2f} % of the time"
    )


def spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})"


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def run(folder: Path, rounds: int) -> None:
    from blocktrain.train.checkpoint.files import CheckpointConfig
    from blocktrain.train.checkpoint.saver import Checkpointer

    train = training()
    size_mb = sum(p.numel() * p.element_size() for p in train.model.parameters()) / 1e6
    print(f"load average {load_average()}")  # noqa: T201
    print(f"phases of a background write, alone, {size_mb:.0f} MB (best of 2):")  # noqa: T201
    for what, (wall, cpu) in phases(train, folder):
        print(f"  {what:<44} {wall:6.3f} s   CPU {cpu:6.3f} s")  # noqa: T201
    config = CheckpointConfig(folder=folder / "async", every_steps=1, keep_last=1)
    contenders: dict[str, Contender] = {
        BASELINE: torch_save,
        "dcp.save": dcp_save,
        PEER: dcp_async_save,
        "blocktrain save": blocktrain_save,
        OURS: blocktrain_async(Checkpointer(config, writer=True, tracker=None)),
    }
    for contender in contenders.values():  # warm-up: buffers, imports, DCP's first plan
        contender(train, folder).finish()
        settle(folder)
    costs: dict[str, list[Cost]] = {name: [] for name in contenders}
    names = list(contenders)
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            costs[name].append(measure(contenders[name], train, folder))
            settle(folder)
    report(costs, size_mb, rounds)
    print(f"load average {load_average()}")  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description="checkpoint cost beside torch.save and DCP")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    rounds: int = parser.parse_args().rounds
    # DCP warns on every call that it saves without a process group: that is the intent here.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BLOCKTRAIN_BENCH_DIR")) as tmp:
        run(Path(tmp), rounds)


if __name__ == "__main__":
    main()
