"""The two ports of docs/porting.md, run for real.

``original/train.py`` is a plain PyTorch script (argparse, its own loop, ``torch.save`` at
the end). ``ported_loop/`` keeps that loop and makes it checkpoint and obey restarts;
``ported_trainer/`` hands it to ``blocktrain.train.Trainer``. The port of the loop must train
the original's weights, and each port, launched with ``slurm-launch`` on the local cluster and
preempted once, must end with the weights of a run that was not preempted, bit for bit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from integration.slurm.launch_project import BIN, LaunchProject
from slurm_service import SlurmCluster

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
FINAL = ("FINISHED", "FAILED", "KILLED")


def project_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` without tracking or launch settings of its own; one thread per process, as
    each Slurm task has one core."""
    env = {k: v for k, v in base.items() if not k.startswith(("MLFLOW_", "BLOCKTRAIN_"))}
    return {**env, "PATH": f"{BIN}:{env.get('PATH', '')}", "OMP_NUM_THREADS": "1"}


def make_project(name: str, root: Path, base_env: dict[str, str]) -> LaunchProject:
    """A copy of the port ``name`` as its own git project, as a researcher would have it."""
    shutil.copytree(HERE / name, root)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return LaunchProject(root, project_env(base_env))


def run_locally(project: LaunchProject, folder: Path, *argv: str) -> subprocess.Popen[str]:
    """``python train.py train ARGV`` in the project, uninterrupted, its run folder ``folder``."""
    env = {**project.env, "BLOCKTRAIN_CHECKPOINT_DIR": str(folder / "checkpoints")}
    return subprocess.Popen(
        [sys.executable, "train.py", "train", *argv],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(child: subprocess.Popen[str], timeout: float = 300) -> str:
    """The stdout of ``child``, which must exit with status 0."""
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err
    return out


def same_weights(a: Path, b: Path) -> bool:
    import torch

    first, second = torch.load(a), torch.load(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("epoch ")]


def test_ported_loop_trains_the_weights_of_the_original_script(tmp_path: Path):
    project = make_project("ported_loop", tmp_path / "project", dict(os.environ))
    original = subprocess.Popen(
        [sys.executable, HERE / "original" / "train.py", "--epochs", "3", "--out", "model.pt"],
        cwd=tmp_path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The experiment file holds the original's defaults; a flag overrides it.
    ported = run_locally(
        project, tmp_path / "ported", "--args", "experiments/baseline.yaml", "--epochs", "3"
    )
    printed = epoch_lines(finished(original))
    assert len(printed) == 3
    assert epoch_lines(finished(ported)) == printed
    assert same_weights(tmp_path / "model.pt", tmp_path / "ported" / "model.pt")


def _progress(project: LaunchProject, run_id: str, lines: int) -> bool:
    """This many validation lines in attempt 1: it trains, and polls should_stop."""
    return project.log(run_id, 1).count(" val_loss ") >= lines


def _run_ends(project: LaunchProject, run_id: str, job_id: str) -> None:
    project.wait(
        lambda: project.run_status(run_id) in FINAL and project.queue_state(job_id) is None,
        300,
        f"run {run_id} to end",
    )
    assert project.run_status(run_id) == "FINISHED"


def test_ported_loop_preempted_on_slurm_ends_bit_identical(
    tmp_path: Path, slurm_cluster: SlurmCluster
):
    project = make_project("ported_loop", tmp_path / "project", slurm_cluster.env)
    run_id, job_id = project.launch("train", "--args", "experiments/baseline.yaml")
    # The same experiment, uninterrupted, beside it on the other core.
    reference = run_locally(project, tmp_path / "reference", "--args", "experiments/baseline.yaml")
    project.wait(lambda: _progress(project, run_id, 2), 180, "attempt 1 to train")
    requeued = project.command("scontrol", "requeue", job_id)
    assert requeued.returncode == 0, requeued.stderr
    _run_ends(project, run_id, job_id)
    finished(reference)
    assert project.tags(run_id)["blocktrain.attempt"] == "2"
    assert "resumed from epoch" in project.log(run_id, 2)
    final = project.root / ".blocktrain" / "runs" / run_id / "model.pt"
    assert same_weights(final, tmp_path / "reference" / "model.pt")


def _preempted_beside_reference(project: LaunchProject) -> tuple[str, str]:
    """Two launches of the baseline, two ranks each: the first preempted once it trains (two
    attempts), the second uninterrupted (one). Returns (preempted run, reference run)."""
    # The node has room for one such job at a time, so they run in turn.
    preempted, job_id = project.launch("train", "--args", "experiments/baseline.yaml")
    reference, reference_job = project.launch("train", "--args", "experiments/baseline.yaml")
    project.wait(lambda: _progress(project, preempted, 2), 180, "attempt 1 to train")
    signalled = project.command("scancel", "--signal=TERM", job_id)
    assert signalled.returncode == 0, signalled.stderr
    _run_ends(project, preempted, job_id)
    _run_ends(project, reference, reference_job)
    assert project.tags(preempted)["blocktrain.attempt"] == "2"
    assert project.tags(reference)["blocktrain.attempt"] == "1"
    return preempted, reference


def test_ported_ddp_loop_preempted_on_slurm_ends_bit_identical(
    tmp_path: Path, slurm_cluster: SlurmCluster
):
    """The loop made data parallel (two ranks, dropout, a scheduler): preempted mid-epoch, it
    ends with the weights of an uninterrupted run."""
    project = make_project("ported_loop_ddp", tmp_path / "project", slurm_cluster.env)
    preempted, reference = _preempted_beside_reference(project)
    resumed = project.log(preempted, 2)
    assert "resumed from epoch" in resumed
    assert "batch 0" not in resumed.split("resumed from epoch", 1)[1].splitlines()[0]  # mid-epoch
    runs = project.root / ".blocktrain" / "runs"
    assert same_weights(runs / preempted / "model.pt", runs / reference / "model.pt")


def test_trainer_port_preempted_on_slurm_ends_bit_identical(
    tmp_path: Path, slurm_cluster: SlurmCluster
):
    project = make_project("ported_trainer", tmp_path / "project", slurm_cluster.env)
    preempted, reference = _preempted_beside_reference(project)
    assert "resumed from" in project.log(preempted, 2)
    runs = project.root / ".blocktrain" / "runs"
    assert same_weights(
        runs / preempted / "exports" / "model.pth", runs / reference / "exports" / "model.pth"
    )
