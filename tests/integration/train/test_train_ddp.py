"""The engine in real processes: one process against two Gloo ranks, and exact resume.

Each training runs as a launched job's tasks would: one process per rank, torch-style
variables, ``process_group()``; a stop comes from the restart protocol, signalled during a
step, and the resume is a new launch of the same job. Every launch has a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
JOB = Path(__file__).resolve().parent / "train_job.py"
DEADLINE_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SLURM_", "BLOCKTRAIN_", "MLFLOW_"))
        and name not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    }
    env["CUDA_VISIBLE_DEVICES"] = ""  # Gloo on CPU, on a GPU machine too
    if world > 1:
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


def launch(folder: Path, world: int, **options: Any) -> list[dict[str, Any]]:
    """Run the job on ``world`` ranks in ``folder``; every rank's result, rank order."""
    folder.mkdir(parents=True, exist_ok=True)
    port, procs, logs = free_port(), [], []
    number = len(list(folder.glob("launch*-rank0.log")))
    for rank in range(world):
        log = folder / f"launch{number}-rank{rank}.log"
        logs.append(log)
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(JOB), str(folder), json.dumps(options)],
                    env=rank_env(rank, world, port),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + DEADLINE_S
    try:
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    texts = [log.read_text() for log in logs]
    report = "\n".join(
        f"--- rank {r} (exit {p.returncode}):\n{t}"
        for r, (p, t) in enumerate(zip(procs, texts, strict=True))
    )
    assert all(proc.returncode == 0 for proc in procs), report
    return [json.loads(text.rsplit("RESULT ", 1)[1]) for text in texts]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    """The same training without dropout on one process and on two ranks."""
    return {world: launch(tmp_path_factory.mktemp(f"full{world}"), world) for world in (1, 2)}


def test_one_and_two_processes_give_the_same_training(
    uninterrupted: dict[int, list[dict[str, Any]]],
) -> None:
    [single], pair = uninterrupted[1], uninterrupted[2]
    assert pair[0]["digest"] == pair[1]["digest"]  # DDP kept the ranks in step
    assert single["step"] == pair[0]["step"] == 18
    # The same examples in every global batch; only the order of float additions differs.
    assert single["params"] == pytest.approx(pair[0]["params"], rel=1e-5, abs=1e-6)
    assert single["values"]["val_accuracy"] == pair[0]["values"]["val_accuracy"]
    assert single["values"]["val_loss"] == pytest.approx(pair[0]["values"]["val_loss"], rel=1e-5)


def test_metrics_over_uneven_shards_equal_the_single_process_ones(
    uninterrupted: dict[int, list[dict[str, Any]]],
) -> None:
    [single], pair = uninterrupted[1], uninterrupted[2]
    # Identical initial weights; 25 validation examples split 13 + 12 over the ranks.
    assert pair[0]["before"] == pair[1]["before"]
    assert pair[0]["before"]["val_accuracy"] == single["before"]["val_accuracy"]
    # float32 batch means over batches of 8 here, of 4 there: the last digits differ. An
    # average of the ranks' averages would be off by far more (13 and 12 examples).
    assert pair[0]["before"]["val_loss"] == pytest.approx(single["before"]["val_loss"], rel=1e-6)


@pytest.mark.parametrize(
    ("world", "stop_at", "stop_rank"),
    [(1, 7, 0), (2, 7, 1)],  # mid-epoch (6 steps an epoch), signalled on the last rank
)
def test_exact_resume_in_new_processes(
    tmp_path: Path, world: int, stop_at: int, stop_rank: int
) -> None:
    options = {"dropout": 0.3}  # random state matters
    full = launch(tmp_path / "full", world, **options)
    cut = launch(tmp_path / "run", world, stop_at=stop_at, stop_rank=stop_rank, **options)
    assert [r["outcome"] for r in cut] == ["requeued"] * world
    assert [r["step"] for r in cut] == [stop_at] * world
    assert (tmp_path / "run" / "markers" / "job").exists()
    resumed = launch(tmp_path / "run", world, **options)
    assert [r["outcome"] for r in resumed] == ["finished"] * world
    assert {r["digest"] for r in resumed} == {full[0]["digest"]}  # bit-identical, every rank
    assert "resumed from" in (tmp_path / "run" / "launch1-rank0.log").read_text()
