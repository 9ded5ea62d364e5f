"""The engine in real processes: one process against two Gloo ranks, and exact resume.

Each training runs as a launched job's tasks would: one process per rank, torch-style
variables, ``process_group()``; a stop comes from the restart protocol, signalled during a
step, and the resume is a new launch of the same job. Every launch has a deadline.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Container
from pathlib import Path
from typing import Any

import pytest

from gloo_ranks import clean_env, free_port, run_ranks, torch_env

pytestmark = pytest.mark.integration
JOB = Path(__file__).resolve().parent / "train_job.py"
DEADLINE_S = 120
VAL = ("val_accuracy", "val_loss")


def launch(folder: Path, world: int, **options: Any) -> list[dict[str, Any]]:
    """Run the job on ``world`` ranks in ``folder``; every rank's result, rank order."""
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.glob("launch*-rank0.log")))
    port = free_port()
    return run_ranks(
        [sys.executable, str(JOB), str(folder), json.dumps(options)],
        [{**clean_env("MLFLOW_"), **torch_env(rank, world, port)} for rank in range(world)],
        [folder / f"launch{number}-rank{rank}.log" for rank in range(world)],
        DEADLINE_S,
    )


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
    # The curves: the training loss logged every 5 steps is the mean over the global batches
    # since the last point, whichever rank read which examples; every rank keeps the same.
    assert pair[0]["history"] == pair[1]["history"]
    assert single["history"].keys() == pair[0]["history"].keys() == {"train_loss", *VAL}
    for name, points in single["history"].items():
        steps = [step for step, _ in points]
        assert steps == [step for step, _ in pair[0]["history"][name]]
        assert [v for _, v in points] == pytest.approx([v for _, v in pair[0]["history"][name]])
    assert [step for step, _ in single["history"]["train_loss"]] == [0, 5, 10, 15, 17]


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
    ("world", "stop_rank", "options", "stopped_after"),
    [
        # Mid-epoch (6 steps an epoch), signalled during step 7 on the last rank. One process
        # stops at once; ranks that vote at every step stop one step later.
        (1, 0, {}, [7]),
        (2, 1, {"config": {"poll_every_s": 0}}, [8]),
        # Ranks that vote every 0.2 s (about 4 steps of 0.05 s) stop within that and a step.
        (2, 1, {"step_sleep": 0.05, "config": {"poll_every_s": 0.2}}, range(8, 16)),
    ],
    ids=["1-rank", "2-ranks-every-step", "2-ranks-every-0.2s"],
)
def test_exact_resume_in_new_processes(
    tmp_path: Path,
    world: int,
    stop_rank: int,
    options: dict[str, Any],
    stopped_after: Container[int],
) -> None:
    options = {"dropout": 0.3, **options}  # random state matters
    full = launch(tmp_path / "full", world, **options)
    cut = launch(tmp_path / "run", world, stop_at=7, stop_rank=stop_rank, **options)
    assert [r["outcome"] for r in cut] == ["requeued"] * world
    steps = {r["step"] for r in cut}
    assert len(steps) == 1  # all ranks stopped at the same step
    assert steps.pop() in stopped_after
    assert (tmp_path / "run" / "markers" / "job").exists()
    resumed = launch(tmp_path / "run", world, **options)
    assert [r["outcome"] for r in resumed] == ["finished"] * world
    assert {r["digest"] for r in resumed} == {full[0]["digest"]}  # bit-identical, every rank
    # The curves too: the points logged before the stop came back with the checkpoint.
    assert resumed[0]["history"] == full[0]["history"]
    assert "resumed from" in (tmp_path / "run" / "launch1-rank0.log").read_text()


def test_final_metrics_describe_the_saved_model_and_survive_a_relaunch(tmp_path: Path) -> None:
    """BatchNorm's running statistics drift apart on each rank after its last batch; only
    rank 0's are saved. Every rank evaluates with rank 0's, so the metrics are the saved
    model's; a relaunch after the final checkpoint keeps them instead of evaluating again."""
    options = {"batchnorm": True}
    first = launch(tmp_path / "run", 2, **options)
    assert [r["outcome"] for r in first] == ["finished"] * 2
    assert first[0]["values"] == first[1]["values"]
    [alone] = launch(tmp_path / "run", 1, evaluate_saved=True, **options)
    assert alone["values"]["val_accuracy"] == first[0]["values"]["val_accuracy"]
    assert alone["values"]["val_loss"] == pytest.approx(first[0]["values"]["val_loss"], rel=1e-6)
    # The relaunch finds the final checkpoint, with the evaluation of its step.
    again = launch(tmp_path / "run", 2, **options)
    assert [r["outcome"] for r in again] == ["finished"] * 2
    assert again[0]["values"] == first[0]["values"]
    assert again[0]["history"] == first[0]["history"]  # no point logged twice
    assert again[0]["digest"] == first[0]["digest"]
