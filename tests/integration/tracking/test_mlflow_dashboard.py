"""What researchers see in the MLflow UI, against a real tracking server and the local Slurm
cluster: run names, a sweep nested under its parent run with a summary, each attempt of a
preempted run as a row, and system metrics for every attempt.

One launch of each kind serves every test of the module: a run preempted once (two attempts)
and a sweep of three runs (one job array), all with one task each so that two jobs share the
two CPUs of a CI machine.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_service import MlflowServer
from slurm_service import SlurmCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slurm"))
from launch_project import LaunchProject  # pyright: ignore[reportMissingImports]

pytestmark = pytest.mark.integration
FINAL = ("FINISHED", "FAILED", "KILLED")
ONE_TASK = ("--slurm", "tasks_per_node=1")
SWEEP_NAMES = ["train-ablation-seed=1", "train-ablation-seed=2", "train-ablation-seed=3"]


@dataclass
class Launched:
    project: LaunchProject
    client: Any
    """An MlflowClient of the session's server."""
    preempted: str
    """The run preempted once."""
    job_id: str
    sweep_lines: list[str]
    """What slurm-launch printed for the sweep: a line per run."""

    @property
    def sweep_runs(self) -> list[str]:
        return [line.split()[1] for line in self.sweep_lines]

    def artifact(self, run_id: str, path: str, folder: Path) -> str:
        return Path(self.client.download_artifacts(run_id, path, str(folder))).read_text()


def status_rows(launched: Launched, run_ids: list[str]) -> list[dict[str, Any]]:
    """slurm-status --json's rows of these runs, in their order."""
    shown = launched.project.command("slurm-status", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["run_id"]: row for row in json.loads(shown.stdout)}
    return [rows[r] for r in run_ids]


def completed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows if every one is COMPLETED, else none."""
    return rows if all(row["state"] == "COMPLETED" for row in rows) else []


def training(project: LaunchProject, run_id: str, attempt: int) -> bool:
    """Two progress lines: past its start-up, polling the restart protocol."""
    return project.log(run_id, attempt).count(" loss ") >= 2


@pytest.fixture(scope="module")
def launched(
    tmp_path_factory: pytest.TempPathFactory,
    slurm_cluster: SlurmCluster,
    mlflow_server: MlflowServer,
) -> Iterator[Launched]:
    project = LaunchProject.create(tmp_path_factory.mktemp("dashboard") / "p", slurm_cluster.env)
    project.env.update(
        MLFLOW_TRACKING_URI=mlflow_server.uri,
        MLFLOW_EXPERIMENT_NAME=f"dashboard-{project.root.parent.name}",
        BLOCKTRAIN_SYSTEM_METRICS_INTERVAL_S="1",
    )
    (project.root / "exp.yaml").write_text("steps: 300\nstep_seconds: 0.05\n")
    (project.root / "base.yaml").write_text("steps: 20\nstep_seconds: 0.0\n")
    (project.root / "ablation.yaml").write_text(
        "base: [base.yaml]\ngrid:\n  seed: [1, 2, 3]\nbest: {metric: final_loss, mode: min}\n"
    )
    run_id, job_id = project.launch("train", "--args", "exp.yaml", *ONE_TASK)
    sweep = project.command("slurm-launch", "train", "--sweep", "ablation.yaml", *ONE_TASK)
    assert sweep.returncode == 0, sweep.stderr
    client = mlflow_server.client()
    done = Launched(project, client, run_id, job_id, sweep.stdout.splitlines())
    try:
        project.wait(lambda: training(project, run_id, 1), 180, "attempt 1 to train")
        preempt = project.command("scancel", "--signal=TERM", job_id)
        assert preempt.returncode == 0, preempt.stderr
        runs = [run_id, *done.sweep_runs]
        project.wait(
            lambda: all(client.get_run(r).info.status in FINAL for r in runs), 400, "the runs"
        )
        parent = client.get_run(done.sweep_runs[0]).data.tags["mlflow.parentRunId"]
        project.wait(
            lambda: client.get_run(parent).info.status in FINAL, 120, "the parent to close"
        )
        yield done
    finally:
        jobs = project.command("squeue", "-h", "-o", "%A").stdout.split()
        if jobs:
            project.command("scancel", *jobs)


def test_runs_are_named_in_mlflow_and_in_slurm_status(launched: Launched):
    client, project = launched.client, launched.project
    assert client.get_run(launched.preempted).info.run_name == "train-exp"
    names = [client.get_run(r).info.run_name for r in launched.sweep_runs]
    assert names == SWEEP_NAMES
    rows = status_rows(launched, [launched.preempted, *launched.sweep_runs])
    assert [row["name"] for row in rows] == ["train-exp", *SWEEP_NAMES]
    table = project.command("slurm-status").stdout
    assert all(name in table for name in ["train-exp", *SWEEP_NAMES])


def test_a_sweep_is_one_array_nested_under_a_parent_with_a_summary(
    launched: Launched, tmp_path: Path
):
    client, runs = launched.client, launched.sweep_runs
    job_ids = [line.split()[3] for line in launched.sweep_lines]
    assert len({j.split("_")[0] for j in job_ids}) == 1
    assert sorted(j.split("_")[1] for j in job_ids) == ["0", "1", "2"]
    children = [client.get_run(r) for r in runs]
    assert [c.info.status for c in children] == ["FINISHED"] * 3
    assert [c.data.params["seed"] for c in children] == ["1", "2", "3"]
    assert [c.data.tags["blocktrain.array_index"] for c in children] == ["0", "1", "2"]
    [parent_id] = {c.data.tags["mlflow.parentRunId"] for c in children}
    assert len({c.data.tags["blocktrain.sweep_id"] for c in children}) == 1

    # The runs end FINISHED a moment before their tasks leave Slurm's queue.
    rows = launched.project.wait(
        lambda: completed(status_rows(launched, runs)), 60, "slurm-status to show three COMPLETED"
    )
    assert [(r["job_id"], r["array_index"], r["parent_run_id"]) for r in rows] == [
        (job, index, parent_id) for index, job in enumerate(job_ids)
    ]

    parent = client.get_run(parent_id)
    assert (parent.info.run_name, parent.info.status) == ("train-ablation", "FINISHED")
    assert parent.data.tags["blocktrain.sweep"] == "true"
    assert parent.data.params == {"sweep.seed": "1,2,3"}
    assert {a.path for a in client.list_artifacts(parent_id)} >= {
        "sweep_summary.csv",
        "sweep_summary.json",
    }
    summary = json.loads(launched.artifact(parent_id, "sweep_summary.json", tmp_path))
    assert [row["run_id"] for row in summary["rows"]] == runs
    assert [row["values"] for row in summary["rows"]] == [{"seed": str(s)} for s in (1, 2, 3)]
    finals = {c.info.run_id: c.data.metrics["final_loss"] for c in children}
    best = min(finals, key=finals.__getitem__)
    assert summary["best"]["run_id"] == best
    assert parent.data.tags["blocktrain.best_run_id"] == best
    assert parent.data.tags["blocktrain.best_run_name"] == client.get_run(best).info.run_name
    table = launched.artifact(parent_id, "sweep_summary.csv", tmp_path).splitlines()
    assert table[0].startswith("run_id,name,status,seed,")
    assert len(table) == 4


def test_each_attempt_of_a_preempted_run_is_a_row(launched: Launched, tmp_path: Path):
    client, run_id = launched.client, launched.preempted
    assert client.get_run(run_id).info.status == "FINISHED"
    rows = json.loads(launched.artifact(run_id, "attempts.json", tmp_path))
    assert [(r["attempt"], r["cause"], r["job_id"]) for r in rows] == [
        (1, "preempted", launched.job_id),
        (2, "finished", launched.job_id),
    ]
    for row in rows:
        assert row["nodes"]
        assert row["started"] <= row["ended"]
        assert row["duration_s"] > 0
    assert len(launched.artifact(run_id, "attempts.csv", tmp_path).splitlines()) == 3
    history = client.get_metric_history(run_id, "requeues.preempted")
    assert [(m.step, m.value) for m in history] == [(1, 1.0)]


def test_every_attempt_has_system_metrics_at_steps_of_its_own(launched: Launched, tmp_path: Path):
    client, run_id = launched.client, launched.preempted
    rows = json.loads(launched.artifact(run_id, "attempts.json", tmp_path))
    history = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    steps = sorted(m.step for m in history)
    assert len(steps) == len(set(steps))  # no attempt reused another's steps
    for row in rows:
        first, last = row["system_metrics_first_step"], row["system_metrics_last_step"]
        assert first is not None, row
        assert last is not None, row
        assert first <= last, row
        assert [s for s in steps if first <= s <= last] == list(range(first, last + 1))
    assert rows[1]["system_metrics_first_step"] > rows[0]["system_metrics_last_step"]
    memory = client.get_metric_history(run_id, "system/system_memory_usage_megabytes")
    assert len(memory) == len(history)
    assert all(m.value > 0 for m in memory)
