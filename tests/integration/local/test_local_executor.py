"""slurm-launch --executor local: the same runs, records, logs, restarts and commands as on
Slurm, with no Slurm on PATH. The project's trainer (tests/integration/slurm/project) is a
two-rank Gloo DDP job that checkpoints and obeys restarts."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from conftest import LocalProject

pytestmark = pytest.mark.integration
FINAL = ("FINISHED", "FAILED", "KILLED")
RUN_TIMEOUT_S = 300


def status_row(project: LocalProject, run_id: str) -> dict[str, object]:
    done = project.command("slurm-status", "--json", run_id)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    return row


def training(project: LocalProject, run_id: str, attempt: int) -> bool:
    """Two progress lines: past its start-up, polling should_stop at each step."""
    return project.log(run_id, attempt).count(" loss ") >= 2


def final_weights(project: LocalProject, run_id: str) -> Path:
    return project.root / ".blocktrain" / "runs" / run_id / "final.pt"


def same_weights(a: Path, b: Path) -> bool:
    import torch

    first, second = torch.load(a), torch.load(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def ended(project: LocalProject, run_id: str) -> bool:
    return project.run_status(run_id) in FINAL and status_row(project, run_id)["state"] in FINAL


def test_a_run_and_a_preempted_one_end_with_the_same_weights(project: LocalProject):
    (project.root / "exp.yaml").write_text(
        "steps: 300\nstep_seconds: 0.05\ncheckpoint_every: 100\n"
    )
    run_id, job_id = project.launch("train", "--args", "exp.yaml", "--executor", "local")
    assert job_id.startswith("L")
    assert project.run_status(run_id) == "SCHEDULED"
    project.wait(lambda: status_row(project, run_id)["state"] == "RUNNING", 60, "RUNNING")
    row = status_row(project, run_id)
    assert (row["job_id"], row["executor"], row["nodes"]) == (job_id, "local", "localhost")
    table = project.command("slurm-status", run_id[:8]).stdout
    assert f"{job_id} (local)" in table
    project.wait(lambda: ended(project, run_id), RUN_TIMEOUT_S, f"run {run_id} to end")
    assert (project.run_status(run_id), status_row(project, run_id)["state"]) == (
        "FINISHED", "FINISHED"
    )  # fmt: skip
    assert project.tags(run_id)["slurm.job_id"] == job_id
    shown = project.command("slurm-log", run_id[:8])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == project.log(run_id, 1, rank=0)
    assert "step 290 loss" in shown.stdout
    assert f"==> attempt 1 (job {job_id}" in shown.stderr

    # The same training, preempted once at a random point: SIGTERM to the job's supervisor.
    # Slower steps (the pause changes no weight) leave a loaded machine time to signal it.
    again, again_job = project.launch(
        "train", "--args", "exp.yaml", "--set", "step_seconds=0.15", "--executor", "local"
    )
    project.wait(lambda: training(project, again, 1), 180, "attempt 1 to train")
    time.sleep(random.uniform(0.5, 4.0))
    pid = project.local_job(again_job)["supervisor_pid"]
    assert isinstance(pid, int)
    assert "step 290 loss" not in project.log(again, 1), "attempt 1 ended before the SIGTERM"
    os.kill(pid, signal.SIGTERM)
    supervisor = next((project.root / ".blocktrain").rglob(f"{again_job}_supervisor.log"))
    project.wait(lambda: "SIGTERM: preempting" in supervisor.read_text(), 60, "the preemption")
    project.wait(lambda: ended(project, again), RUN_TIMEOUT_S, f"run {again} to end")
    assert project.run_status(again) == "FINISHED"
    assert project.tags(again)["blocktrain.attempt"] == "2"
    assert "resumed from step" in project.log(again, 2)
    assert project.local_job(again_job)["elements"][0]["restart_count"] == 1
    counts = json.loads((final_weights(project, again).parent / "restarts.json").read_text())
    assert counts == {"preemption": 1}
    assert same_weights(final_weights(project, again), final_weights(project, run_id))


def test_stop_ends_killed_and_the_run_id_resumes_it(project: LocalProject):
    (project.root / "exp.yaml").write_text(
        "steps: 600\nstep_seconds: 0.05\ncheckpoint_every: 1000\n"
    )
    run_id, job_id = project.launch("train", "--args", "exp.yaml", "--executor", "local")
    project.wait(lambda: training(project, run_id, 1), 180, "attempt 1 to train")
    stopped = project.command("slurm-stop", run_id[:8])
    assert stopped.returncode == 0, stopped.stderr
    assert "checkpoints and stops" in stopped.stdout
    project.wait(lambda: ended(project, run_id), 120, "the stopped run to end")
    assert project.run_status(run_id) == "KILLED"
    assert status_row(project, run_id)["state"] == "KILLED"
    assert "stopping after step" in project.log(run_id, 1)

    relaunched = project.command("slurm-launch", "train", "--run-id", run_id)
    assert relaunched.returncode == 0, relaunched.stderr
    new_job = relaunched.stdout.split()[3]
    assert new_job.startswith("L")  # the run's own executor again
    assert new_job != job_id
    project.wait(lambda: ended(project, run_id), RUN_TIMEOUT_S, "the relaunched run to end")
    assert project.run_status(run_id) == "FINISHED"
    assert "resumed from step" in project.log(run_id, 2)
    assert status_row(project, run_id)["job_id"] == new_job


def test_the_time_limit_signal_requeues_and_the_next_attempt_resumes(project: LocalProject):
    """The profile's signal comes signal_lead_s before the limit: a periodic restart."""
    (project.root / "exp.yaml").write_text(
        "steps: 1000\nstep_seconds: 0.05\ncheckpoint_every: 5000\n"
    )
    run_id, job_id = project.launch(
        "train", "--args", "exp.yaml", "--executor", "local",
        "--slurm", "time=2", "--slurm", "signal_lead_s=60",
    )  # fmt: skip
    project.wait(lambda: ended(project, run_id), RUN_TIMEOUT_S, f"run {run_id} to end")
    assert project.run_status(run_id) == "FINISHED"
    assert "stopping after step" in project.log(run_id, 1)
    assert "resumed from step" in project.log(run_id, 2)
    counts = json.loads((final_weights(project, run_id).parent / "restarts.json").read_text())
    assert set(counts) == {"timeout"}
    [element] = project.local_job(job_id)["elements"]
    assert element["restart_count"] == counts["timeout"] >= 1


def test_cancel_ends_the_tasks_at_once_and_the_run_killed(project: LocalProject):
    (project.root / "exp.yaml").write_text("steps: 5000\nstep_seconds: 0.05\n")
    run_id, job_id = project.launch("train", "--args", "exp.yaml", "--executor", "local")
    project.wait(lambda: training(project, run_id, 1), 180, "attempt 1 to train")
    pids = project.local_job(job_id)["elements"][0]["pids"]
    cancelled = project.command("slurm-cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} cancelled" in cancelled.stdout
    assert project.run_status(run_id) == "KILLED"
    assert status_row(project, run_id)["state"] in ("KILLED", "CANCELLED")
    assert project.local_job(job_id)["elements"][0]["state"] == "CANCELLED"
    assert isinstance(pids, list)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_sweep_runs_its_elements_one_after_another(project: LocalProject):
    (project.root / "sweep.yaml").write_text("runs:\n  - {seed: 1}\n  - {seed: 2}\n  - {seed: 3}\n")
    done = project.command(
        "slurm-launch", "train", "--sweep", "sweep.yaml", "--set", "steps=20",
        "--set", "step_seconds=0.0", "--executor", "local",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = [line.split()[1] for line in done.stdout.splitlines()]
    jobs = [line.split()[3] for line in done.stdout.splitlines()]
    base = jobs[0].split("_")[0]
    assert jobs == [f"{base}_0", f"{base}_1", f"{base}_2"]
    project.wait(
        lambda: all(ended(project, r) for r in runs), 3 * RUN_TIMEOUT_S, "the three runs to end"
    )
    assert [project.run_status(r) for r in runs] == ["FINISHED"] * 3
    elements = project.local_job(base)["elements"]
    assert isinstance(elements, list)
    for first, second in itertools.pairwise(elements):
        assert second["started"] >= first["ended"]
    listed = project.command("slurm-status", "--json", base)
    assert sorted(row["run_id"] for row in json.loads(listed.stdout)) == sorted(runs)
    # The supervisor closes the sweep's parent run once its last element has ended.
    [parent] = {project.tags(r)["mlflow.parentRunId"] for r in runs}
    project.wait(lambda: project.run_status(parent) == "FINISHED", 60, "the parent run to end")


def test_an_unknown_executor_is_one_line_and_creates_nothing(project: LocalProject):
    (project.root / "exp.yaml").write_text("steps: 10\n")
    done = project.command("slurm-launch", "train", "--args", "exp.yaml", "--executor", "nonsense")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "unknown executor 'nonsense'" in done.stderr
    assert not (project.root / ".blocktrain").exists()
    assert not (project.root / "mlflow.db").exists()


def status_json(project: LocalProject, run_id: str) -> dict[str, object]:
    return json.loads((project.root / ".blocktrain" / "logs" / run_id / "status.json").read_text())


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_killed_rank_ends_the_run_failed_in_mlflow_and_status_json(project: LocalProject):
    """SIGKILL leaves rank 0 no word to say; with no crash budget to requeue it, the run ends
    FAILED everywhere, and the supervisor settles it."""
    (project.root / "exp.yaml").write_text("steps: 5000\nstep_seconds: 0.05\n")
    run_id, job_id = project.launch(
        "train", "--args", "exp.yaml", "--executor", "local", "--slurm", "restarts.crashes=0"
    )
    project.wait(lambda: training(project, run_id, 1), 180, "attempt 1 to train")
    assert status_json(project, run_id)["status"] == "RUNNING"
    rank0 = project.local_job(job_id)["elements"][0]["pids"][0]
    os.kill(rank0, signal.SIGKILL)
    project.wait(lambda: ended(project, run_id), 120, "the job to end")
    assert project.run_status(run_id) == "FAILED"
    local = status_json(project, run_id)
    assert local["status"] == "FAILED"
    assert "without a word from the run" in str(local["reason"])
    assert status_row(project, run_id)["run_state"] == "FAILED"


def test_a_job_whose_supervisor_died_ends_at_the_next_look_and_resumes(project: LocalProject):
    """The machine lost the supervisor (SIGKILL): nothing requeues or ends its job. The next
    command that reads it kills the tasks left behind and ends the run FAILED everywhere; the
    run resumes from its checkpoint."""
    (project.root / "exp.yaml").write_text("steps: 400\nstep_seconds: 0.05\ncheckpoint_every: 50\n")
    run_id, job_id = project.launch("train", "--args", "exp.yaml", "--executor", "local")
    project.wait(lambda: "step 60 loss" in project.log(run_id, 1), 180, "a checkpoint")
    state = project.local_job(job_id)
    tasks = state["elements"][0]["pids"]
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    project.wait(lambda: gone(state["supervisor_pid"]), 30, "the supervisor to go")
    assert not any(gone(pid) for pid in tasks)  # its tasks go on, unsupervised

    row = status_row(project, run_id)

    assert (row["state"], row["run_state"]) == ("FAILED", "FAILED")
    assert project.run_status(run_id) == "FAILED"
    assert status_json(project, run_id)["status"] == "FAILED"
    assert project.local_job(job_id)["elements"][0]["state"] == "FAILED"
    project.wait(lambda: all(gone(pid) for pid in tasks), 10, "the tasks left behind to go")
    assert project.command("slurm-status", "--json", run_id).returncode == 0  # settled once

    relaunched = project.command("slurm-launch", "train", "--run-id", run_id)
    assert relaunched.returncode == 0, relaunched.stderr
    project.wait(lambda: ended(project, run_id), RUN_TIMEOUT_S, "the relaunched run to end")
    assert project.run_status(run_id) == "FINISHED"
    assert "resumed from step" in project.log(run_id, 2)
