"""Lightning code under blocktrain (blocktrain.lightning) with --executor local: a LightningModule
on two Gloo DDP ranks preempted twice and stopped by its time limit once ends with the weights
of an uninterrupted run, in one MLflow run; a Fabric loop preempted once, the same; what
blocktrain cannot run is refused in one line with exit status 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from blocktrain.core import checkpointfiles
from conftest import LocalProject

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
FINAL = ("FINISHED", "FAILED", "KILLED")
RUN_TIMEOUT_S = 420


def lightning_project(project: LocalProject) -> LocalProject:
    shutil.copy(HERE / "lightning_project" / "lit.py", project.root / "lit.py")
    text = (project.root / "pyproject.toml").read_text()
    (project.root / "pyproject.toml").write_text(text.replace('"restartable"', '"lit"'))
    return project


def ended(project: LocalProject, run_id: str) -> bool:
    return project.run_status(run_id) in FINAL


def final_weights(project: LocalProject, run_id: str) -> dict:
    import torch

    return torch.load(project.root / ".blocktrain" / "runs" / run_id / "final.pt")


def assert_same_weights(project: LocalProject, run_id: str, other: str) -> None:
    import torch

    first, second = final_weights(project, run_id), final_weights(project, other)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), {
        k: float((first[k] - second[k]).abs().max()) for k in first
    }


def steps_logged(project: LocalProject, run_id: str, attempt: int) -> int:
    return sum(line.startswith("step ") for line in project.log(run_id, attempt).splitlines())


def preempt(project: LocalProject, run_id: str, job_id: str, attempt: int) -> None:
    """SIGTERM to the local job's supervisor (a preemption) once the attempt trains."""
    project.wait(
        lambda: steps_logged(project, run_id, attempt) >= 1, 180, f"attempt {attempt} to train"
    )
    pid = project.local_job(job_id)["supervisor_pid"]
    os.kill(pid, signal.SIGTERM)
    project.wait(
        lambda: project.log(run_id, attempt + 1) != "" or ended(project, run_id),
        180, f"attempt {attempt + 1}",
    )  # fmt: skip


def test_a_lightning_module_preempted_twice_and_timed_out_once_ends_as_if_uninterrupted(
    project: LocalProject,
):
    lightning_project(project)
    # 480 steps. The time-limit warning comes 120 s into each attempt: the first two attempts
    # are preempted once they train, the third pauses 0.5 s in every step (at most 240 steps
    # before its warning) and runs into its time limit, the fourth pauses in none and ends well
    # before its own. The pauses do not change what is computed.
    (project.root / "exp.yaml").write_text(
        "epochs: 3\nexamples: 5120\nstep_seconds: 0.5\nslow_attempts: 3\n"
    )
    baseline, _ = project.launch(
        "train", "--args", "exp.yaml", "--set", "step_seconds=0.0", "--executor", "local"
    )
    run_id, job_id = project.launch(
        "train", "--args", "exp.yaml", "--executor", "local",
        "--slurm", "time=3", "--slurm", "signal_lead_s=60",
    )  # fmt: skip
    preempt(project, run_id, job_id, 1)
    preempt(project, run_id, job_id, 2)
    project.wait(lambda: ended(project, baseline), RUN_TIMEOUT_S, "the uninterrupted run")
    assert project.run_status(baseline) == "FINISHED"
    project.wait(lambda: ended(project, run_id), RUN_TIMEOUT_S, f"run {run_id} to end")
    assert project.run_status(run_id) == "FINISHED", project.diagnostics()
    counts = json.loads(
        (project.root / ".blocktrain" / "runs" / run_id / "restarts.json").read_text()
    )
    assert counts == {"preemption": 2, "timeout": 1}
    assert project.tags(run_id)["blocktrain.attempt"] == "4"
    assert [r["run_id"] for r in project.runs()].count(run_id) == 1
    assert len(project.runs()) == 2  # no run of Lightning's own
    for attempt in (2, 3, 4):
        assert "blocktrain: resuming from" in project.log(run_id, attempt, stream="err")
    assert "Bypassing SIGTERM" not in project.log(run_id, 1, stream="err")
    assert_same_weights(project, run_id, baseline)
    # Lightning's metrics and hyperparameters in the run; each point once, the same as the
    # uninterrupted run's.
    params = project.params(run_id)
    assert params["lightning.lr"] == "0.05"
    assert params["lr"] == "0.05"
    history = project.metric_history(run_id, "train_loss")
    assert len({step for step, _ in history}) == len(history)
    assert history == project.metric_history(baseline, "train_loss")
    assert project.metric_history(run_id, "val_loss") == project.metric_history(
        baseline, "val_loss"
    )


def test_a_fabric_loop_preempted_once_ends_as_if_uninterrupted(project: LocalProject):
    lightning_project(project)
    (project.root / "exp.yaml").write_text("epochs: 3\nexamples: 1024\nstep_seconds: 0.05\n")
    baseline, _ = project.launch(
        "train_fabric", "--args", "exp.yaml", "--set", "step_seconds=0.0", "--executor", "local"
    )
    run_id, job_id = project.launch("train_fabric", "--args", "exp.yaml", "--executor", "local")
    preempt(project, run_id, job_id, 1)
    project.wait(lambda: ended(project, baseline), RUN_TIMEOUT_S, "the uninterrupted run")
    assert project.run_status(baseline) == "FINISHED"
    project.wait(lambda: ended(project, run_id), RUN_TIMEOUT_S, f"run {run_id} to end")
    assert project.run_status(run_id) == "FINISHED", project.diagnostics()
    assert project.tags(run_id)["blocktrain.attempt"] == "2"
    assert "blocktrain: resumed from" in project.log(run_id, 2)
    assert_same_weights(project, run_id, baseline)


def test_without_lightning_the_launch_is_one_line_and_queues_nothing(project: LocalProject):
    lightning_project(project)
    (project.root / "exp.yaml").write_text("epochs: 1\n")
    # A Python path on which `import lightning` fails, as where it is not installed.
    shadow = project.root.parent / "no-lightning"
    (shadow / "lightning").mkdir(parents=True)
    (shadow / "lightning" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'lightning'\", name='lightning')\n"
    )
    project.env["PYTHONPATH"] = str(shadow)
    done = project.command("slurm-launch", "train", "--args", "exp.yaml", "--executor", "local")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "pip install 'blocktrain[lightning]'" in line
    assert project.runs() == []
    assert not (project.root / ".blocktrain" / "local-jobs").exists()


def test_a_trainer_blocktrain_cannot_requeue_is_one_line_and_exit_2(project: LocalProject):
    lightning_project(project)
    started = time.monotonic()
    done = project.command(
        "python", "lit.py", "train", "--strategy", "ddp_spawn", "--epochs", "1", timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: strategy='ddp_spawn' cannot be requeued by blocktrain (it starts its own "
        "processes or shards its checkpoints): use strategy='ddp' or leave it out"
    )
    assert time.monotonic() - started < 300


def test_the_port_of_docs_lightning_md_resumes_exactly(project: LocalProject):
    """The ported script of docs/lightning.md as it is, preempted once after its first
    checkpoint; Lightning's ModelCheckpoint files are checksummed too."""
    ported = HERE.parent / "lightning_porting" / "ported"
    shutil.copy(ported / "train.py", project.root / "train.py")
    shutil.copytree(ported / "experiments", project.root / "experiments")
    text = (project.root / "pyproject.toml").read_text()
    (project.root / "pyproject.toml").write_text(text.replace('"restartable"', '"train"'))
    args = ("train", "--args", "experiments/baseline.yaml", "--executor", "local")
    baseline, _ = project.launch(*args)
    run_id, job_id = project.launch(*args)
    checkpoints = project.root / ".blocktrain" / "runs" / run_id / "checkpoints"
    project.wait(lambda: any(checkpoints.glob("step-*.pt.sha256")), 300, "a first checkpoint")
    os.kill(project.local_job(job_id)["supervisor_pid"], signal.SIGTERM)
    for run in (baseline, run_id):
        project.wait(lambda run=run: ended(project, run), RUN_TIMEOUT_S, f"run {run} to end")
        assert project.run_status(run) == "FINISHED", project.diagnostics()
    assert project.tags(run_id)["blocktrain.attempt"] == "2"
    import torch

    weights = [
        torch.load(project.root / ".blocktrain" / "runs" / run / "model.pt")
        for run in (baseline, run_id)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    saved = sorted((project.root / ".blocktrain" / "runs" / run_id).rglob("*.ckpt"))
    assert [p.name for p in saved if p.name == "last.ckpt"] == ["last.ckpt"]
    assert all(checkpointfiles.is_good(path) for path in saved)
