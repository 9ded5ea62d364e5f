"""A tracking server that is away while a run ends: the run's own end reaches MLflow once the
server is back, and no older attempt's end replaces a newer one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from blocktrain.track.backend import ATTEMPT_TAG, MlflowBackend
from blocktrain.track.replay import replay_unsent, spill_path
from blocktrain.track.writer import Op, write_spill
from conftest import LocalProject
from mlflow_service import MlflowServer

pytestmark = pytest.mark.integration


def spilled_end(spill: Path) -> int | None:
    """The end time of the final status kept in ``spill``, once the file holds it."""
    try:
        lines = spill.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return None
    for line in lines:
        if not line.endswith("\n"):
            break  # still being written
        op = json.loads(line)
        if op["kind"] == "status" and op["data"]["status"] == "FINISHED":
            return int(op["data"]["end_time_ms"])
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_a_run_that_finished_while_the_server_was_down_ends_finished_in_mlflow(
    project: LocalProject, own_mlflow_server: MlflowServer
):
    project.env.update(
        MLFLOW_TRACKING_URI=own_mlflow_server.up(),
        # The end waits this long for the server, then keeps its records on disk.
        BLOCKTRAIN_MLFLOW_FLUSH_SECONDS="2",
    )
    (project.root / "exp.yaml").write_text("steps: 200\nstep_seconds: 0.05\ncheckpoint_every: 50\n")
    run_id, job_id = project.launch("train", "--args", "exp.yaml", "--executor", "local")
    project.wait(lambda: "step 10 loss" in project.log(run_id, 1), 180, "attempt 1 to train")
    own_mlflow_server.down()
    assert "step 190 loss" not in project.log(run_id, 1), "the run ended before the outage"
    spill = spill_path(project.root / ".blocktrain" / "logs", run_id, 1)
    end_ms = project.wait(lambda: spilled_end(spill), 180, "the run's end to be kept on disk")
    assert (project.root / ".blocktrain" / "runs" / run_id / "finished").exists()
    # Back before the job's supervisor closes the run, as when the outage ends in that instant.
    own_mlflow_server.up()
    supervisor = project.local_job(job_id)["supervisor_pid"]
    project.wait(lambda: not alive(supervisor), 300, "the job's supervisor to end")
    assert project.local_job(job_id)["elements"][0]["state"] == "COMPLETED"

    client = own_mlflow_server.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", project.diagnostics()
    assert run.info.end_time == end_ms  # the run's own end, not a later stand-in
    assert not spill.exists()
    history = client.get_metric_history(run_id, "loss")
    assert sorted({int(m.step) for m in history}) == list(range(0, 200, 10))
    logs = [a.path for a in client.list_artifacts(run_id, "logs/attempt-1")]
    assert "logs/attempt-1/rank-0.out" in logs
    status_json = json.loads(
        (project.root / ".blocktrain" / "logs" / run_id / "status.json").read_text()
    )
    assert status_json["status"] == "FINISHED"


def test_a_late_spill_of_an_earlier_attempt_keeps_the_later_attempts_end(
    mlflow_server: MlflowServer, tmp_path: Path
):
    store = MlflowBackend(mlflow_server.uri)
    run_id = store.create_run("late-spill", "two-attempts", {ATTEMPT_TAG: "1"})
    # Attempt 1 ended while the server was away and kept its end; attempt 2 then ran and
    # finished with the server up; attempt 1's records are sent only now.
    write_spill(
        spill_path(tmp_path, run_id, 1),
        run_id,
        [
            Op("metrics", {"items": [["loss", 0.5, 1000, 10]]}),
            Op("tags", {"items": {ATTEMPT_TAG: "1", "host": "n1"}}),
            Op("status", {"status": "FAILED", "end_time_ms": 1000}),
        ],
    )
    store.log_batch(run_id, [("loss", 0.25, 2000, 20)], {}, {ATTEMPT_TAG: "2"})
    store.set_status(run_id, "FINISHED", 2000)
    replay_unsent(store, tmp_path)
    run = store.get_run(run_id)
    assert (run.info.status, run.info.end_time) == ("FINISHED", 2000)
    assert run.data.tags[ATTEMPT_TAG] == "2"
    assert run.data.tags["host"] == "n1"
    steps = [int(m.step) for m in store.client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == [10, 20]
    assert not list((tmp_path / "unsent").glob("*.jsonl"))
