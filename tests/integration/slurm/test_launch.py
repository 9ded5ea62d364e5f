"""slurm-launch on the real local cluster: DDP jobs, restarts, stop and relaunch, hard deaths."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launch_project import LaunchProject

from conftest import SlurmCluster

pytestmark = pytest.mark.integration
FINAL = ("FINISHED", "FAILED", "KILLED")


@pytest.fixture
def project(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[LaunchProject]:
    made = LaunchProject.create(tmp_path / "project", slurm_cluster.env)
    yield made
    # Leave the shared cluster empty for the next test.
    jobs = made.command("squeue", "-h", "-o", "%A").stdout.split()
    if jobs:
        made.command("scancel", *jobs)
        made.wait(lambda: not made.command("squeue", "-h").stdout.strip(), 60, "an empty queue")


def reference_weights(project: LaunchProject, tmp_path: Path, steps: int) -> Path:
    """The same training, uninterrupted, in two Gloo processes outside Slurm."""
    script = (
        "import inspect, os, sys\n"
        f"sys.path.insert(0, {str(project.root)!r})\n"
        "from blocktrain.distributed import process_group\n"
        "import restartable\n"
        "with process_group():\n"
        f"    inspect.unwrap(restartable.train)(steps={steps}, step_seconds=0.0)\n"
    )
    folder = tmp_path / "reference" / "checkpoints"
    folder.mkdir(parents=True)
    port = str(20000 + random.randrange(20000))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env={
                **project.env,
                "RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "BLOCKTRAIN_CHECKPOINT_DIR": str(folder),
            },
        )
        for rank in range(2)
    ]
    assert [c.wait(timeout=300) for c in children] == [0, 0]
    return folder.parent / "final.pt"


def same_weights(a: Path, b: Path) -> bool:
    import torch

    first, second = torch.load(a), torch.load(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_two_task_ddp_job_completes_with_params_metrics_and_logs(
    project: LaunchProject, tmp_path: Path
):
    (project.root / "exp.yaml").write_text("steps: 60\nstep_seconds: 0.0\n")
    run_id, job_id = project.launch("train", "--args", "exp.yaml")
    assert project.run_status(run_id) == "SCHEDULED"
    project.wait(lambda: project.run_status(run_id) in FINAL, 240, f"run {run_id} to end")
    assert project.run_status(run_id) == "FINISHED"
    assert project.params(run_id) == {
        "steps": "60",
        "step_seconds": "0.0",
        "seed": "0",
        "checkpoint_every": "50",
    }
    tags = project.tags(run_id)
    assert tags["blocktrain.attempt"] == "1"
    assert tags["world_size"] == "2"
    assert tags["slurm.job_id"] == job_id
    assert [s for s, _ in project.metric_history(run_id, "loss")] == [0, 10, 20, 30, 40, 50]
    assert "step 50 loss" in project.log(run_id, 1, rank=0)
    assert "step 50 loss" in project.log(run_id, 1, rank=1)
    project.wait(lambda: project.job_state(job_id) == "COMPLETED", 60, "sacct to report COMPLETED")
    assert same_weights(
        project.root / ".blocktrain" / "runs" / run_id / "final.pt",
        reference_weights(project, tmp_path, 60),
    )


def _training(project: LaunchProject, run_id: str, attempt: int) -> bool:
    return "step " in project.log(run_id, attempt)


def test_preempted_three_times_and_timed_out_once_ends_bit_identical(
    project: LaunchProject, tmp_path: Path
):
    """Three preemptions at random points and one time limit: five attempts, exact weights."""
    rng = random.Random()
    steps = 2000
    (project.root / "exp.yaml").write_text(
        f"steps: {steps}\nstep_seconds: 0.05\ncheckpoint_every: 400\n"
    )
    run_id, job_id = project.launch(
        "train", "--args", "exp.yaml", "--slurm", "time=2", "--slurm", "signal_lead_s=60",
        "--slurm", "restarts.preemptions=3", "--slurm", "restarts.timeouts=1",
    )  # fmt: skip
    preempt = {
        1: ["scancel", "--signal=TERM", job_id],
        2: ["scontrol", "requeue", job_id],
        3: ["scancel", "--signal=TERM", job_id],
    }
    for attempt, command in preempt.items():
        project.wait(
            lambda a=attempt: _training(project, run_id, a), 180, f"attempt {attempt} to train"
        )
        project.wait(
            lambda: True, rng.uniform(1.0, 6.0), "a random point", interval=rng.uniform(1.0, 6.0)
        )
        done = project.command(*command)
        assert done.returncode == 0, done.stderr
    # Attempt 4 runs into its time limit: Slurm's USR1 comes 60 s before it.
    project.wait(lambda: _training(project, run_id, 4), 180, "attempt 4 to train")
    project.wait(lambda: "stopping after" in project.log(run_id, 4), 150, "the time-limit signal")
    project.wait(
        lambda: project.queue_state(job_id) == "PENDING", 60, "the requeue after the time limit"
    )
    # Attempt 5 gets the time it needs.
    assert project.command("scontrol", "update", f"JobId={job_id}", "TimeLimit=10").returncode == 0
    project.wait(
        lambda: project.run_status(run_id) in FINAL and project.queue_state(job_id) is None,
        400,
        "the run to end",
    )
    assert project.run_status(run_id) == "FINISHED"
    tags = project.tags(run_id)
    assert tags["blocktrain.attempt"] == "5"
    assert [v for _, v in project.metric_history(run_id, "attempt")] == [1.0, 2.0, 3.0, 4.0, 5.0]
    counts = (project.root / ".blocktrain" / "runs" / run_id / "restarts.json").read_text()
    assert counts.replace(" ", "") in (
        '{"preemption":3,"timeout":1}',
        '{"timeout":1,"preemption":3}',
    )
    for attempt in (2, 3, 4, 5):
        assert "resumed from step" in project.log(run_id, attempt)
    final = project.root / ".blocktrain" / "runs" / run_id / "final.pt"
    assert same_weights(final, reference_weights(project, tmp_path, steps))
