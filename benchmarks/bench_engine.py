"""Loop overhead: samples/s of the training engine beside a minimal hand-written PyTorch loop.

    .venv/bin/python benchmarks/bench_engine.py        (make bench)

Both train the CNN of tests/shapes_demo.py on the same synthetic 16x16 images with the same
global batch (64), SGD with momentum, one thread per process: in one process, then in two Gloo
processes (DDP, DistributedSampler). The minimal loop is what a researcher writes by hand; the
engine adds its per-step bookkeeping (loss totals on the device, the step boundary, logging
every 10 steps). Each round runs both, in turns that alternate from round to round, after a
warm-up round; each process is pinned to a core of its own. The ratio engine / minimal is taken
within each round, so that a slow spell of the machine, which lasts seconds, touches both
sides; the median of the rounds' ratios is the figure, with a 95 % bootstrap interval of that
median and the quartiles of the rounds (how much the machine wandered). The ratio of the best
round of each loop is printed beside it: noise only ever slows a loop down, so the fastest
rounds are the least disturbed. Asserts nothing (goal: ratio >= 0.97).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXAMPLES = 4096
BATCH = 64
EPOCHS = 2
ROUNDS = 60
RESAMPLES = 2000
HERE = Path(__file__).resolve()
TESTS = HERE.parents[1] / "tests"  # shapes_demo.py: the CNN and its synthetic images


def setup() -> tuple[Any, Any]:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(TESTS))
    from shapes_demo import dataset, network  # pyright: ignore[reportMissingImports] - on TESTS

    return dataset(EXAMPLES, 0.3, seed=0), network(16)


def minimal_loop(data: Any, model: Any, rank: int, world: int) -> float:  # noqa: ANN401
    """Seconds for EPOCHS epochs of the plain loop a researcher writes."""
    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    net = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, seed=0)
    loader = DataLoader(data, batch_size=BATCH // world, sampler=sampler)
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        for images, labels in loader:
            loss = nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def engine_loop(data: Any, model: Any, rank: int, world: int) -> float:  # noqa: ANN401
    """Seconds for EPOCHS epochs of Trainer.fit with the same model, data and batch."""
    import torch
    from torch import nn

    from blocktrain.train import TrainConfig, Trainer

    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(
        model,
        optimizer,
        nn.functional.cross_entropy,
        config=TrainConfig(epochs=EPOCHS, batch_size=BATCH, seed=0),
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
        trainer.fit(data)
    return time.perf_counter() - start


def measure(rank: int, world: int) -> dict[str, float]:
    """Best samples/s of each loop, and the quartiles of the ratios within a round."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > rank:  # one core per rank: no migrations between the rounds
        os.sched_setaffinity(0, {cores[rank]})
    try:
        return _rounds(rank, world)
    finally:
        os.sched_setaffinity(0, cores)


def _rounds(rank: int, world: int) -> dict[str, float]:
    data, model = setup()
    import copy
    import statistics

    best = {"minimal": 0.0, "engine": 0.0}
    loops = [("minimal", minimal_loop), ("engine", engine_loop)]
    ratios: list[float] = []
    for round_ in range(ROUNDS + 1):
        speed: dict[str, float] = {}
        for name, loop in loops if round_ % 2 else loops[::-1]:
            speed[name] = EPOCHS * EXAMPLES / loop(data, copy.deepcopy(model), rank, world)
        if round_:  # the first round warms caches and allocators up
            ratios.append(speed["engine"] / speed["minimal"])
            for name, value in speed.items():
                best[name] = max(best[name], value)
    low, median, high = statistics.quantiles(ratios, n=4)
    lower, upper = median_interval(ratios)
    return {**best, "median": median, "low": low, "high": high, "lower": lower, "upper": upper}


def median_interval(values: list[float]) -> tuple[float, float]:
    """A 95 % bootstrap interval of the median of ``values`` (seeded: the same every run)."""
    import random
    import statistics

    draw = random.Random(0)  # noqa: S311 (resampling, not secrets)
    medians = sorted(
        statistics.median(draw.choices(values, k=len(values))) for _ in range(RESAMPLES)
    )
    return medians[int(0.025 * RESAMPLES)], medians[int(0.975 * RESAMPLES) - 1]


def child() -> None:
    from blocktrain.distributed import process_group

    with process_group(timeout_s=120) as place:
        result = measure(place.rank, place.world_size)
    if place.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)  # noqa: T201
    from blocktrain.distributed import exit_without_finalizing

    exit_without_finalizing()  # as a launched task does (PyTorch's Gloo abort at exit)


def two_processes() -> dict[str, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "CUDA_VISIBLE_DEVICES": "",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE), "--child"], env=env, stdout=subprocess.PIPE, text=True
            )
        )
    outputs = [proc.communicate(timeout=1800)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a rank failed: exit codes {[p.returncode for p in procs]}")
    return json.loads(outputs[0].rsplit("RESULT ", 1)[1])


def report(label: str, result: dict[str, float]) -> None:
    print(  # noqa: T201
        f"{label:<22} ratio engine / minimal loop, median of {ROUNDS} rounds "
        f"{result['median']:.3f} (goal >= 0.97; 95 % interval {result['lower']:.3f} to "
        f"{result['upper']:.3f}; rounds' quartiles {result['low']:.3f} to {result['high']:.3f})\n"
        f"{'':<22} best rounds: minimal loop {result['minimal']:6.0f} samples/s, engine "
        f"{result['engine']:6.0f} samples/s, ratio {result['engine'] / result['minimal']:.3f}",
        flush=True,
    )


def main() -> None:
    if "--child" in sys.argv:
        child()
        return
    print(  # noqa: T201
        f"demo CNN, {EXAMPLES} synthetic 16x16 images, global batch {BATCH}, {EPOCHS} epochs a "
        f"round, {ROUNDS} rounds, 1 thread and 1 core per process",
        flush=True,
    )
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    report("1 process", measure(0, 1))
    report("2 Gloo processes (DDP)", two_processes())


if __name__ == "__main__":
    main()
