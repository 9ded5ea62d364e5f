"""A sweep's parent as data: swept keys, parent params, the best run and the summary table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blocktrain.errors import ArgsError
from blocktrain.launch.sweeps import summary as ss
from blocktrain.launch.sweeps.expand import Best, argument_sets, parse_best


def child(run_id: str, status: str, loss: float | None, **values: str) -> ss.ChildResult:
    metrics = {"system/cpu_utilization_percentage": 12.0, "attempt": 1.0}
    if loss is not None:
        metrics["val_loss"] = loss
    return ss.ChildResult(
        run_id=run_id, name=f"train-{run_id}", status=status, values=values, metrics=metrics
    )


def test_swept_keys_are_the_elements_own_then_what_differs():
    declared = [{"lr": 0.1}, {"lr": 0.01}]
    resolved = [
        {"lr": 0.1, "steps": 5, "optim": {"wd": 0.0}, "seed": 1},
        {"lr": 0.01, "steps": 5, "optim": {"wd": 0.1}, "seed": 1},
    ]
    keys = ss.swept_keys(declared, resolved)
    assert keys == ["lr", "optim.wd"]
    values = [ss.child_values(keys, args) for args in resolved]
    assert values == [{"lr": "0.1", "optim.wd": "0.0"}, {"lr": "0.01", "optim.wd": "0.1"}]
    assert ss.parent_params(keys, [*values, values[0]]) == {
        "sweep.lr": "0.1,0.01",
        "sweep.optim.wd": "0.0,0.1",
    }


def test_the_best_rule_comes_from_the_flag_the_sweep_file_or_the_entry(tmp_path: Path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("grid: {lr: [1, 2]}\nbest: {metric: acc, mode: max}\n")
    sets = argument_sets([], [], sweep, {})
    resolved = [{"lr": 1, "schedule": {"monitor": "val_loss", "mode": "min"}}] * 2
    assert ss.plan_sweep("p", sets, resolved).best_by == Best("acc", "max")
    assert ss.plan_sweep("p", sets, resolved, Best("f1", "max")).best_by == Best("f1", "max")
    plain = argument_sets([], [tmp_path / "a.yaml", tmp_path / "b.yaml"], None, {})
    assert ss.plan_sweep("p", plain, resolved).best_by == Best("val_loss", "min")
    assert ss.entry_monitor([{"monitor": "acc", "mode": "max"}]) == Best("acc", "max")
    assert ss.entry_monitor([{"monitor": "a"}, {"monitor": "b"}]) is None  # not one metric
    assert ss.entry_monitor([{"lr": 1}]) is None


@pytest.mark.parametrize(
    ("text", "best"),
    [("val_loss", Best("val_loss", "min")), ("acc:max", Best("acc", "max")),
     ("a:b:min", Best("a:b", "min"))],
)  # fmt: skip
def test_best_flag(text: str, best: Best):
    assert parse_best(text) == best


@pytest.mark.parametrize("text", [":min", "acc:up"])
def test_bad_best_flag(text: str):
    with pytest.raises(ArgsError, match="METRIC:min or METRIC:max"):
        parse_best(text)


def test_bad_best_in_a_sweep_file(tmp_path: Path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("grid: {lr: [1]}\nbest: {metric: acc, mode: up}\n")
    with pytest.raises(ArgsError, match="best must look like"):
        argument_sets([], [], sweep, {})


def test_the_best_run_is_the_best_finished_one():
    rows = [
        child("a", "FINISHED", 0.3),
        child("b", "FAILED", 0.1),
        child("c", "FINISHED", 0.2),
        child("d", "FINISHED", None),
        child("e", "FINISHED", 0.2),
    ]
    best = ss.best_run(rows, Best("val_loss", "min"))
    assert best is not None
    assert best.run_id == "c"  # b failed; e ties and comes later
    best_max = ss.best_run(rows, Best("val_loss", "max"))
    assert best_max is not None
    assert best_max.run_id == "a"
    assert ss.best_run(rows, None) is None
    assert ss.best_run(rows, Best("missing")) is None


def test_parent_status_waits_for_every_run():
    assert ss.parent_status(["FINISHED", "RUNNING"]) is None
    assert ss.parent_status(["FINISHED", "SCHEDULED"]) is None
    assert ss.parent_status(["FINISHED", "KILLED"]) == "FINISHED"
    assert ss.parent_status(["FINISHED", "FAILED"]) == "FAILED"


def test_summary_tables_leave_system_metrics_out():
    rows = [child("a", "FINISHED", 0.3, lr="0.1"), child("b", "FAILED", None, lr="0.01")]
    summary = ss.summarize(rows, ["lr"], Best("val_loss"))
    assert ss.csv_text(summary).splitlines() == [
        "run_id,name,status,lr,attempt,val_loss",
        "a,train-a,FINISHED,0.1,1.0,0.3",
        "b,train-b,FAILED,0.01,1.0,",
    ]
    document = json.loads(ss.json_text(summary, "parent"))
    assert document["parent_run_id"] == "parent"
    assert document["best"] == {"run_id": "a", "name": "train-a", "value": 0.3}
    assert document["best_by"] == {"metric": "val_loss", "mode": "min"}
    assert document["rows"][1] == {
        "run_id": "b", "name": "train-b", "status": "FAILED", "values": {"lr": "0.01"},
        "metrics": {"attempt": 1.0},
    }  # fmt: skip
    assert ss.best_tags(summary) == {
        "blocktrain.best_run_id": "a",
        "blocktrain.best_run_name": "train-a",
    }
    assert ss.best_tags(ss.summarize(rows, ["lr"], None)) == {}


def test_a_metric_named_like_a_column_is_told_apart():
    rows = [ss.ChildResult(run_id="a", name="n", status="FINISHED", values={"lr": "1"},
                           metrics={"lr": 0.5, "status": 1.0})]  # fmt: skip
    assert ss.columns(ss.summarize(rows, ["lr"], None)) == [
        "run_id", "name", "status", "lr", "metric.lr", "metric.status",
    ]  # fmt: skip
