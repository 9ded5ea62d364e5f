"""The crash-loop guard on the real local cluster: a crash that repeats the previous attempt's
before any step ends the run at once; a crash after progress is requeued as before."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launch_project import HERE, LaunchProject

from slurm_service import SlurmCluster

pytestmark = pytest.mark.integration
NOTE = (
    "FileNotFoundError: [Errno 2] No such file or directory: 'missing-data' (not requeued: "
    "the previous attempt failed the same way before its first step; fix the cause, then run "
    "slurm-launch --run-id {run_id})"
)


@pytest.fixture
def project(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[LaunchProject]:
    made = LaunchProject.create(tmp_path / "project", slurm_cluster.env)
    shutil.copy(HERE / "project" / "crashing.py", made.root / "crashing.py")
    yield made
    jobs = made.command("squeue", "-h", "-o", "%A").stdout.split()
    if jobs:  # leave the shared cluster empty for the next test
        made.command("scancel", *jobs)
        made.wait(lambda: not made.command("squeue", "-h").stdout.strip(), 60, "an empty queue")


def ended(project: LaunchProject, run_id: str, job_id: str) -> bool:
    """The job left the queue for good (a requeued crash stays in it, PENDING)."""
    return project.queue_state(job_id) is None and project.run_status(run_id) in (
        "FINISHED",
        "FAILED",
        "KILLED",
    )


def test_the_same_crash_before_the_first_step_ends_the_run_after_two_attempts(
    project: LaunchProject,
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from webhook_server import WebhookServer

    with WebhookServer() as hook:
        project.env["BLOCKTRAIN_SLACK_WEBHOOK_URL"] = hook.url
        run_id, job_id = project.launch("crashing:train", "--slurm", "restarts.crashes=3")
        project.wait(lambda: ended(project, run_id, job_id), 300, f"run {run_id} to end")
        note = NOTE.format(run_id=run_id)
        assert project.run_status(run_id) == "FAILED"
        assert project.tags(run_id)["blocktrain.attempt"] == "2"
        logs = project.root / ".blocktrain" / "logs" / run_id
        assert sorted(p.name for p in logs.glob("attempt-*")) == ["attempt-1", "attempt-2"]
        counts = project.root / ".blocktrain" / "runs" / run_id / "restarts.json"
        assert json.loads(counts.read_text()) == {"crash": 1}
        assert project.status_file(run_id)["reason"] == note
        assert f"blocktrain: {note}" in project.log(run_id, 2, stream="err")
        shown = project.command("slurm-status", "--json", run_id)
        assert shown.returncode == 0, shown.stderr
        [row] = json.loads(shown.stdout)
        assert (row["state"], row["reason"]) == ("FAILED", note)
        table = project.command("slurm-status", run_id).stdout
        assert f"{run_id[:8]}: {note}" in table
        crashes = project.wait(
            lambda: [b for b in hook.bodies if b["text"].startswith(":x:")][:2], 30, "two crashes"
        )
    first, second = ([block["text"]["text"] for block in b["blocks"]] for b in crashes)
    assert "(attempt 1): FileNotFoundError" in first[0]
    assert not any("not requeued" in text for text in first)
    assert "(attempt 2): FileNotFoundError" in second[0]
    assert second[1] == f":no_entry: {note}"


def test_crashes_after_progress_keep_their_budget_and_the_run_finishes(
    project: LaunchProject,
) -> None:
    """Two attempts crash alike at their fifth step: both are requeued, the third finishes."""
    run_id, job_id = project.launch(
        "crashing:train", "--set", "crash_at_step=5", "--set", "crashes=2",
        "--slurm", "restarts.crashes=3",
    )  # fmt: skip
    project.wait(lambda: ended(project, run_id, job_id), 400, f"run {run_id} to end")
    assert project.run_status(run_id) == "FINISHED"
    assert project.tags(run_id)["blocktrain.attempt"] == "3"
    counts = project.root / ".blocktrain" / "runs" / run_id / "restarts.json"
    assert json.loads(counts.read_text()) == {"crash": 2}
    for attempt in (1, 2):
        assert "RuntimeError: crashed at step 5" in project.log(run_id, attempt, stream="err")
    assert "not requeued" not in project.log(run_id, 2, stream="err")
    assert "reason" not in project.status_file(run_id)
