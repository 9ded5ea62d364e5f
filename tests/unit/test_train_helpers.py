"""What entry functions take from the library instead of writing it: the steps a schedule
spans, the arguments every checkpoint keeps (read back typed), the checkpoint a run or a
registered model names, and a call's run nested under the training run it read."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import nn
from trainkit import TinyNet, blobs

from blocktrain.core.jobenv import JobContext
from blocktrain.errors import BlocktrainError
from blocktrain.track import TrackConfig, Tracker, nest_under
from blocktrain.track.tracker import made_current
from blocktrain.track.writer import Op, RunWriter
from blocktrain.train import (
    TrainConfig,
    Trainer,
    checkpoint_of,
    planned_steps,
    record_args,
    recorded_args,
)
from blocktrain.train.checkpoint import files as checkpoint

TRAIN = blobs(50, seed=1)


# --- planned_steps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "world", "expected"),
    [
        ({}, 1, 14),  # 7 batches of 8 (the last one short) in each of 2 epochs
        ({"grad_accum_steps": 2}, 1, 14),  # 13 micro-batches of 4, in 7 steps an epoch
        ({"max_steps": 9}, 1, 9),
        ({"drop_last": True, "epochs": 3}, 1, 18),
        ({}, 2, 14),  # each rank's 25 examples in micro-batches of 4
        ({"batch_size": 16, "grad_accum_steps": 2, "max_steps": 100}, 2, 8),
    ],
)
def test_planned_steps_count_the_optimizer_steps(
    settings: dict[str, Any], world: int, expected: int
) -> None:
    config = TrainConfig(**{"epochs": 2, "batch_size": 8, **settings})
    assert planned_steps(TRAIN, config, world) == expected


@pytest.mark.parametrize("settings", [{}, {"grad_accum_steps": 2}, {"max_steps": 9}])
def test_planned_steps_are_the_steps_fit_takes(settings: dict[str, Any]) -> None:
    config = TrainConfig(**{"epochs": 2, "batch_size": 8, **settings})
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, optimizer, nn.functional.cross_entropy, config=config)
    trainer.fit(TRAIN)
    assert trainer.progress.step == planned_steps(TRAIN, config, 1)


# --- record_args and recorded_args -----------------------------------------------------------


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclass(frozen=True)
class Net:
    width: float = 0.5
    color: Color = Color.RED


@dataclass(frozen=True)
class Kept:
    """What a test training keeps: nested settings, tuples, a path."""

    net: Net
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    source: Path


KEPT = Kept(Net(0.25, Color.BLUE), ("bird", "drone"), (0.5, 0.25), Path("data/sky"))


def test_the_kept_arguments_are_json_and_come_back_typed(tmp_path: Path) -> None:
    args = record_args(KEPT)
    assert args == {
        "net": {"width": 0.25, "color": "BLUE"},
        "classes": ["bird", "drone"],
        "mean": [0.5, 0.25],
        "source": "data/sky",
    }
    path = checkpoint.save({"model": {}, "args": args}, tmp_path, 3)
    assert recorded_args(path, Kept) == KEPT


def test_arguments_that_do_not_fit_name_the_checkpoint_and_the_field(tmp_path: Path) -> None:
    args = record_args(KEPT)
    args["net"] = {"width": "wide"}
    path = checkpoint.save({"model": {}, "args": args}, tmp_path, 3)
    with pytest.raises(BlocktrainError, match=r"step-0+3\.pt are no Kept: net\.width: expected"):
        recorded_args(path, Kept)
    older = checkpoint.save({"model": {}}, tmp_path, 4)  # a training that kept nothing
    with pytest.raises(BlocktrainError, match=r"are no Kept: args: expected mapping for Kept"):
        recorded_args(older, Kept)


def test_only_a_dataclass_is_recorded() -> None:
    with pytest.raises(BlocktrainError, match="takes a dataclass instance"):
        record_args(Kept)  # pyright: ignore[reportArgumentType]


# --- checkpoint_of ---------------------------------------------------------------------------


def test_a_run_names_its_own_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / ".blocktrain" / "runs" / "run1" / "checkpoints"
    last = checkpoint.save({"model": {}}, folder, 7)
    found = checkpoint_of(run_id="run1", which="last")
    assert found == (last, "run1")
    assert (found.path, found.run_id) == (last, "run1")


@pytest.mark.parametrize(("run_id", "model"), [(None, None), ("run1", "models:/sky/1")])
def test_the_trained_model_is_named_once(run_id: str | None, model: str | None) -> None:
    with pytest.raises(BlocktrainError, match="name the trained model once"):
        checkpoint_of(run_id=run_id, model=model)


# --- nest_under ------------------------------------------------------------------------------


class Writer:
    """Stands in for the run's writer: keeps what would be sent."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.ops: list[Op] = []

    def submit(self, op: Op) -> None:
        self.ops.append(op)


def tracker_of(run_id: str, tmp_path: Path) -> tuple[Tracker, Writer]:
    writer = Writer(run_id)
    config = TrackConfig(
        tracking_uri="sqlite:///unused.db", experiment="x", root=tmp_path, log_dir=tmp_path
    )
    tracker = Tracker(
        context=JobContext(host="here"),
        config=config,
        attempt=1,
        attempt_dir=tmp_path / "attempt-1",
        writer=cast("RunWriter", writer),
    )
    return tracker, writer


def test_a_calls_run_is_nested_under_the_training_run(tmp_path: Path) -> None:
    tracker, writer = tracker_of("predict-run", tmp_path)
    with made_current(tracker):
        nest_under("train-run", "models:/sky/2")
        nest_under("train-run")
    assert writer.ops == [
        Op(
            "tags",
            {"items": {"mlflow.parentRunId": "train-run", "blocktrain.model": "models:/sky/2"}},
        ),
        Op("tags", {"items": {"mlflow.parentRunId": "train-run"}}),
    ]


def test_a_run_is_never_nested_under_itself_nor_outside_a_call(tmp_path: Path) -> None:
    tracker, writer = tracker_of("train-run", tmp_path)
    nest_under("train-run")  # no tracked call: nothing to tag
    with made_current(tracker):
        nest_under("train-run")  # evaluate resumed the training run itself
    assert writer.ops == []
