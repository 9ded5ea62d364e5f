"""A run's attempts: causes of endings, the records on disk, the rows and requeue counts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from blocktrain.core.paths import LogFiles
from blocktrain.core.values import JSON
from blocktrain.errors import RequeueRequested, StopRequested, Terminated
from blocktrain.restart import RestartBudgetError
from blocktrain.track import attempthistory, attempts


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (None, "finished"),
        (SystemExit(0), "finished"),
        (RequeueRequested("preemption"), "preempted"),
        (RequeueRequested("timeout"), "time_limit"),
        (RequeueRequested("node_failure"), "node_failure"),
        (RequeueRequested("Some Thing"), "some_thing"),
        (StopRequested("stopped by slurm-stop"), "stopped"),
        (Terminated("SIGTERM"), "killed"),
        (KeyboardInterrupt(), "killed"),
        (ValueError("boom"), "crashed"),
        (RestartBudgetError("spent"), "crashed"),
        (SystemExit(3), "crashed"),
    ],
)
def test_cause_of_each_ending(error: BaseException | None, cause: str):
    assert attempts.cause_of(error) == cause


def test_slurm_states_and_spent_budgets_as_causes():
    assert attempts.slurm_cause("NODE_FAIL") == "node_failure"
    assert attempts.slurm_cause("CANCELLED by 1000") == "cancelled"
    assert attempts.slurm_cause("OUT_OF_MEMORY") == "out_of_memory"
    assert attempts.slurm_cause("FAILED") == "crashed"
    assert attempts.slurm_cause("UNKNOWN") == "lost"
    assert attempts.spent_cause({"preemption": 1}, {"preemption": 2}) == "preempted"
    assert attempts.spent_cause({}, {"timeout": 1}) == "time_limit"
    assert attempts.spent_cause({"crash": 1}, {"crash": 1}) is None
    assert attempts.spent_cause({}, {"crash": 1, "timeout": 1}) is None  # which one is unknown


def test_requeues_count_up_per_cause():
    rows = [
        attempts.row_of({"attempt": 1, "cause": "preempted"}),
        attempts.row_of({"attempt": 2, "cause": "time_limit"}),
        attempts.row_of({"attempt": 3, "cause": "preempted"}),
        attempts.row_of({"attempt": 4, "cause": "finished"}),
    ]
    assert attempts.requeue_metrics(rows, 1) == {"requeues.preempted": 1.0}
    assert attempts.requeue_metrics(rows, 2) == {"requeues.time_limit": 1.0}
    assert attempts.requeue_metrics(rows, 3) == {"requeues.preempted": 2.0}
    assert attempts.requeue_metrics(rows, 4) == {}
    assert attempts.requeue_metrics(rows, 9) == {}


def test_system_steps_follow_every_earlier_attempt():
    assert attempts.next_system_step([]) == 0
    reported: dict[str, JSON] = {
        "system_metrics": {"first_step": 0, "last_step": 6, "interval_s": 10}
    }
    assert attempts.next_system_step([reported]) == 7
    # Lost before it said its last step: as many steps as 95 s at 10 s allow, and one more.
    lost: dict[str, JSON] = {
        "system_metrics": {"first_step": 7, "interval_s": 10},
        "duration_s": 95.0,
    }
    assert attempts.next_system_step([reported, lost]) == 7 + 10 + 1 + 1
    assert attempts.next_system_step([{"attempt": 1}]) == 0  # sampled nothing


def begin(logs: LogFiles, number: int, restarts: dict[str, int]) -> attempthistory.Begun:
    now = time.time()
    record = {
        "attempt": number,
        "job_id": "77",
        "nodes": "node[1-2]",
        "started": time.strftime(attempthistory.STAMP, time.localtime(now)),
        "started_at": now,
    }
    logs.attempt(number).mkdir(parents=True)
    return attempthistory.begin(logs, number, record, restarts)


def test_attempts_on_disk_preempted_lost_and_killed(tmp_path: Path):
    logs = LogFiles(tmp_path / "run")
    assert begin(logs, 1, {}) == attempthistory.Begun()
    attempthistory.end(logs, 1, "preempted")
    second = begin(logs, 2, {"preemption": 1})
    assert second == attempthistory.Begun(previous=1, requeues={"requeues.preempted": 1.0})
    # Attempt 2 dies without a word; the restart protocol spent a node failure meanwhile.
    (logs.attempt(2) / "rank-0.out").write_text("step 10\n")
    os.utime(logs.attempt(2) / "rank-0.out", (time.time() + 5, time.time() + 5))
    third = begin(logs, 3, {"preemption": 1, "node_failure": 1})
    assert third.requeues == {"requeues.node_failure": 1.0}
    fourth = begin(logs, 4, {"preemption": 1, "node_failure": 1})  # 3 left no trace of why
    assert fourth.requeues == {"requeues.lost": 1.0}
    assert attempthistory.close_unreported(logs, "cancelled") == 4
    assert attempthistory.close_unreported(logs, "cancelled") is None  # already closed

    folder = attempthistory.write_tables(logs)
    rows = json.loads((folder / attempthistory.TABLE_JSON).read_text())
    assert [(r["attempt"], r["job_id"], r["nodes"], r["cause"]) for r in rows] == [
        (1, "77", "node[1-2]", "preempted"),
        (2, "77", "node[1-2]", "node_failure"),
        (3, "77", "node[1-2]", "lost"),
        (4, "77", "node[1-2]", "cancelled"),
    ]
    assert all(r["ended"] and r["duration_s"] >= 0 for r in rows)
    assert rows[1]["duration_s"] >= 5  # its end is its log's last change
    csv_lines = (folder / attempthistory.TABLE_CSV).read_text().splitlines()
    assert csv_lines[0] == (
        "attempt,job_id,started,ended,cause,nodes,duration_s,"
        "system_metrics_first_step,system_metrics_last_step"
    )
    assert len(csv_lines) == 5
    record = attempthistory.read(logs, 1)
    assert record is not None
    assert record["restarts"] == {}  # the budgets at its start, for the next attempt to compare


def test_system_steps_are_noted_in_the_record(tmp_path: Path):
    logs = LogFiles(tmp_path / "run")
    begin(logs, 1, {})
    attempthistory.note_system_steps(logs, 1, {"first_step": 0, "interval_s": 1.0})
    attempthistory.note_system_steps(logs, 1, {"last_step": 4})
    attempthistory.end(logs, 1, "preempted")
    begin(logs, 2, {})
    assert attempthistory.first_system_step(logs, 2) == 5
    [row] = [attempts.row_of(r) for _, r in attempthistory.records(logs, before=2)]
    assert (row.system_metrics_first_step, row.system_metrics_last_step) == (0, 4)
