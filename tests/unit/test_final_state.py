"""One final state per run, the same in MLflow and status.json, whatever order the places were
written in: the finalizer's decision and its writes (the watcher job, a local job's supervisor,
``slurm-cancel``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launchkit import RecordingScheduler, run

from blocktrain.core.paths import Layout
from blocktrain.launch.records import finalstate, tracking
from blocktrain.launch.records.store import read_record
from blocktrain.launch.slurm import finalize
from blocktrain.track.backend import MlflowBackend


@pytest.mark.parametrize(
    ("mlflow", "local", "finished", "job_state", "expected"),
    [
        ("RUNNING", "RUNNING", False, "FAILED", "FAILED"),  # a rank SIGKILLed: nobody reported
        ("RUNNING", None, False, "CANCELLED by 0", "KILLED"),
        ("SCHEDULED", "SCHEDULED", False, "CANCELLED", "KILLED"),  # cancel during a requeue
        ("KILLED", "SCHEDULED", False, "CANCELLED", "KILLED"),  # cancel raced the tasks
        ("SCHEDULED", "KILLED", False, "COMPLETED", "KILLED"),  # MLflow got the older word
        ("FAILED", "FINISHED", True, "COMPLETED", "FINISHED"),  # a status sent out of order
        ("FAILED", "RUNNING", True, "FAILED", "FINISHED"),  # killed after the marker
        ("FINISHED", "RUNNING", False, "FAILED", "FINISHED"),
        ("FAILED", "KILLED", False, "FAILED", "FAILED"),
        ("RUNNING", "RUNNING", False, "TIMEOUT", "FAILED"),
    ],
)
def test_the_settled_state_puts_the_runs_own_word_first(
    mlflow: str, local: str | None, finished: bool, job_state: str, expected: str
):
    got = finalstate.settled(mlflow=mlflow, local=local, finished=finished, job_state=job_state)
    assert got == expected


def test_status_text_keeps_the_other_fields_and_drops_a_stale_reason():
    old = json.dumps(
        {"run_id": "r", "attempt": 3, "status": "FAILED", "reason": "x", "metrics": {}}
    )
    new = json.loads(finalstate.status_text(old, run_id="r", status="FINISHED", reason=None, now=5))
    assert new == {"run_id": "r", "attempt": 3, "status": "FINISHED", "metrics": {}, "updated": 5}
    broken = json.loads(finalstate.status_text("{", run_id="r", status="KILLED", reason="y", now=1))
    assert broken == {"run_id": "r", "status": "KILLED", "updated": 1, "reason": "y"}
    assert finalstate.local_said("[]") is None
    assert finalstate.local_said(None) is None


def _one_run(project: Path) -> tuple[Layout, str, MlflowBackend]:
    result = run(project, RecordingScheduler())
    layout = Layout(project)
    record = read_record(layout, result.runs[0].run_id)
    return layout, record.run_id, tracking.backend(record.tracking_uri, project)


def _status_json(layout: Layout, run_id: str) -> dict[str, object]:
    return json.loads(layout.log_files(run_id).status.read_text())


def test_a_run_killed_without_a_word_ends_failed_in_mlflow_and_status_json(project: Path):
    layout, run_id, store = _one_run(project)
    logs = layout.log_files(run_id)
    logs.folder.mkdir(parents=True, exist_ok=True)
    logs.status.write_text(json.dumps({"run_id": run_id, "attempt": 1, "status": "RUNNING"}))

    changed = finalize.finalize(layout, [run_id], lambda _: "FAILED")

    assert changed == [(run_id, "FAILED")]
    assert store.get_run(run_id).info.status == "FAILED"
    local = _status_json(layout, run_id)
    assert local["status"] == "FAILED"
    assert local["attempt"] == 1
    assert local["reason"] == "its job ended FAILED without a word from the run"
    assert finalize.finalize(layout, [run_id], lambda _: "FAILED") == []  # settled: no change


def test_a_cancel_that_raced_the_tasks_last_status_is_settled_killed(project: Path):
    layout, run_id, store = _one_run(project)
    store.set_status(run_id, "KILLED", None)  # slurm-cancel first...
    logs = layout.log_files(run_id)
    logs.folder.mkdir(parents=True, exist_ok=True)
    logs.status.write_text(json.dumps({"run_id": run_id, "status": "SCHEDULED"}))  # ...then rank 0

    asked: list[str] = []
    changed = finalize.finalize(layout, [run_id], lambda r: asked.append(r.run_id) or "CANCELLED")

    assert changed == [(run_id, "KILLED")]
    assert asked == []  # the state was already known: no sacct call
    assert store.get_run(run_id).info.status == "KILLED"
    assert _status_json(layout, run_id)["status"] == "KILLED"


def test_a_finished_run_is_not_marked_failed_by_a_status_that_arrived_late(project: Path):
    layout, run_id, store = _one_run(project)
    store.set_status(run_id, "FAILED", None)
    layout.run(run_id).finished_marker.touch()

    changed = finalize.finalize(layout, [run_id], lambda _: "COMPLETED")

    assert changed == [(run_id, "FINISHED")]
    assert store.get_run(run_id).info.status == "FINISHED"
    assert _status_json(layout, run_id)["status"] == "FINISHED"
