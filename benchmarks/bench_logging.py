"""MLflow logging at 20 steps/s: what logging five metrics adds to the step time.

    .venv/bin/python benchmarks/bench_logging.py        (make bench)

A "step" is CPU work calibrated to 50 ms (20 steps/s), on one thread. Blocks of steps that
log five metrics to a real tracked run alternate with blocks that log nothing; the median
block of each kind gives its step time. The ways of logging:

- the engine's, every step: :class:`blocktrain.train.logbook.Logbook` queues the points for
  the tracker's background writer every 5 s, which sends them in one request;
- the engine's defaults: the same, every 10th step (``TrainConfig.log_every_steps``);
- ``Tracker.log_metrics`` called every step: the writer sends requests as they come;
- the engine's defaults with system metrics on (:mod:`blocktrain.track.sysmetrics`), sampled
  every 0.5 s instead of the default 10 s: MLflow's monitors read the machine on a thread of
  their own and their samples go through the same writer.

Two stores: the embedded SQLite one (whose database work runs inside the training process,
under its GIL) and a local tracking server started for the benchmark (scripts/mlflow-server;
on a cluster it runs elsewhere, here it shares the CPUs).

Wall-clock step times on a shared machine move by more than the effect measured, so two
steadier figures come with them: the CPU time the writer thread (and the sampling thread, with
system metrics on) spent (read from /proc/self/task) as a share of the block's time, an upper
bound of what it can take from the training thread through the GIL when a core is free for it;
and the cost of one call on the training thread. Checks that every point reached the run.
Asserts nothing (goal: < 1 % for the engine's logging, system metrics on or off).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

STEP_S = 0.05
BLOCK = 120
SYSTEM_METRICS_S = 0.5
ROUNDS = 3
CALLS = 2000
REPO = Path(__file__).resolve().parent.parent
Log = Callable[[Mapping[str, float], int], None]


def calibrate() -> tuple[Any, int]:
    """A matrix and a repeat count whose products take about STEP_S."""
    import torch

    torch.set_num_threads(1)
    matrix = torch.randn(192, 192) / 192**0.5
    work(matrix, 10)  # warm-up: the first products are slow
    repeats = 1
    while True:
        took = min(timed_work(matrix, repeats) for _ in range(3))
        if took > STEP_S / 4:
            return matrix, max(1, round(repeats * STEP_S / took))
        repeats *= 2


def timed_work(matrix: Any, repeats: int) -> float:  # noqa: ANN401
    start = time.perf_counter()
    work(matrix, repeats)
    return time.perf_counter() - start


def work(matrix: Any, repeats: int) -> float:  # noqa: ANN401
    value = matrix
    for _ in range(repeats):
        value = (value @ matrix).tanh()
    return float(value[0, 0])


def block(matrix: Any, repeats: int, log: Log | None, every: int, first: int) -> float:  # noqa: ANN401
    """Mean seconds per step over BLOCK steps, calling ``log`` after every ``every``-th."""
    start = time.perf_counter()
    for index in range(first, first + BLOCK):
        loss = work(matrix, repeats)
        if log is not None and index % every == 0:
            log({"loss": loss, "lr": 0.1, "accuracy": 0.5, "grad_norm": 1.0, "lag": 0.0}, index)
    return (time.perf_counter() - start) / BLOCK


def thread_cpu_s(name: str) -> float:
    """CPU seconds the thread called ``name`` has used so far (Linux); 0 when there is none."""
    import threading

    found = [t for t in threading.enumerate() if t.name == name]
    if not found:
        return 0.0
    stat = Path(f"/proc/self/task/{found[0].native_id}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writer_cpu_s() -> float:
    """CPU seconds the tracker's writer thread has used so far."""
    return thread_cpu_s("blocktrain-mlflow")


@contextlib.contextmanager
def system_metrics(tracker: Any, on: bool, step: int, cpu: list[float]) -> Iterator[None]:  # noqa: ANN401
    """Sampling for the block when ``on``, from ``step``; adds the sampling thread's CPU
    seconds to ``cpu``."""
    from blocktrain.track.sysmetrics import THREAD_NAME, MonitorSampler, SystemMetrics

    if not on:
        yield
        return
    sampling = SystemMetrics(
        MonitorSampler.from_mlflow, tracker.log_side_metrics,
        interval_s=SYSTEM_METRICS_S, first_step=step,
    )  # fmt: skip
    sampling.start()
    try:
        yield
    finally:
        cpu.append(thread_cpu_s(THREAD_NAME))
        sampling.stop()


@contextlib.contextmanager
def server(folder: Path) -> Iterator[str]:
    script = [sys.executable, str(REPO / "scripts" / "mlflow-server")]
    done = subprocess.run(
        [*script, "up", "--dir", str(folder)], capture_output=True, text=True, check=True
    )
    try:
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            [*script, "down", "--dir", str(folder), "--purge"], capture_output=True, check=False
        )


def measure(uri: str, root: Path, matrix: Any, repeats: int) -> None:  # noqa: ANN401
    from mlflow import MlflowClient

    from blocktrain.track import tracking
    from blocktrain.train.config import TrainConfig
    from blocktrain.train.logbook import Logbook

    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "bench-logging"}
    env["BLOCKTRAIN_LOG_DIR"] = str(root / "logs")
    env["BLOCKTRAIN_SYSTEM_METRICS_INTERVAL_S"] = "0"  # on in one kind of block only, below
    defaults = TrainConfig()
    times: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}
    with tracking("bench", {}, env=env) as tracker:
        logbook = Logbook(tracker, every_s=defaults.log_flush_seconds)
        engine = f"engine, every {defaults.log_every_steps}th step"
        ways: dict[str, tuple[Log | None, int, bool]] = {
            "no logging": (None, 1, False),
            "engine, every step": (logbook.log, 1, False),
            engine: (logbook.log, defaults.log_every_steps, False),
            "log_metrics every step": (tracker.log_metrics, 1, False),
            f"{engine}, system metrics": (logbook.log, defaults.log_every_steps, True),
        }
        for round_ in range(ROUNDS):
            for number, (name, (log, every, sampled)) in enumerate(ways.items()):
                used, sampling_cpu = writer_cpu_s(), list[float]()
                first = (round_ * len(ways) + number) * BLOCK
                with system_metrics(tracker, sampled, first, sampling_cpu):
                    times.setdefault(name, []).append(block(matrix, repeats, log, every, first))
                logbook.flush()
                if tracker.writer is not None:  # the next block starts with an idle writer
                    tracker.writer.flush(120)
                spent = writer_cpu_s() - used + sum(sampling_cpu)
                cpu[name] = cpu.get(name, 0.0) + spent
        start = time.perf_counter()
        for index in range(CALLS):
            tracker.log_metrics({"call_cost": 1.0}, step=index)
        per_call = (time.perf_counter() - start) / CALLS
        run_id = str(tracker.run_id)
    points = len(MlflowClient(uri).get_metric_history(run_id, "lag"))
    expected = ROUNDS * BLOCK * (2 + 2 / defaults.log_every_steps)
    samples = len(MlflowClient(uri).get_metric_history(run_id, "system/cpu_utilization_percentage"))
    base = statistics.median(times["no logging"])
    for name, values in times.items():
        step = statistics.median(values)
        share = 100 * cpu[name] / sum(values) / BLOCK
        overhead = "" if name == "no logging" else f"   wall {100 * (step / base - 1):+6.2f} %"
        print(f"  {name:<43} {step * 1000:5.1f} ms a step   writer CPU {share:5.2f} %{overhead}")  # noqa: T201
    print(  # noqa: T201
        f"  one log_metrics call: {per_call * 1e6:.0f} us on the training thread; "
        f"points in the run: {points} of {expected:.0f} logged; "
        f"system metric samples every {SYSTEM_METRICS_S:g} s: {samples}"
    )


def main() -> None:
    matrix, repeats = calibrate()
    print(  # noqa: T201
        f"steps of ~{STEP_S * 1000:.0f} ms (20 steps/s), five metrics a point, median of "
        f"{ROUNDS} blocks of {BLOCK} steps (goal: engine overhead < 1 %)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
        os.chdir(root)  # the embedded store's artifacts go under the project root
        print("embedded SQLite store:", flush=True)  # noqa: T201
        measure(f"sqlite:///{root / 'mlflow.db'}", root, matrix, repeats)
        with server(root / "server") as uri:
            print(f"tracking server ({uri}):", flush=True)  # noqa: T201
            measure(uri, root, matrix, repeats)


if __name__ == "__main__":
    main()
