"""slurm-launch on the real local cluster: DDP jobs, restarts, stop and relaunch, hard deaths."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launch_project import LaunchProject

from blocktrain.core.paths import Layout
from blocktrain.launch.launcher import DRY_RUN_ID
from blocktrain.launch.records.store import read_record
from slurm_service import SlurmCluster

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
        "from blocktrain.distributed import exit_without_finalizing, process_group\n"
        "import restartable\n"
        "with process_group():\n"
        f"    inspect.unwrap(restartable.train)(steps={steps}, step_seconds=0.0)\n"
        # As a launched task does: PyTorch's DDP on Gloo aborts now and then at exit.
        "exit_without_finalizing()\n"
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
    assert submitted_script(project, run_id, job_id) == dry_run_script(project, run_id)
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


def submitted_script(project: LaunchProject, run_id: str, job_id: str) -> str:
    """The batch script submitit handed to sbatch."""
    layout = Layout(project.root)
    launch_id = read_record(layout, run_id).launch_id
    return (layout.launch(launch_id).submitit / f"{job_id}_submission.sh").read_text()


def dry_run_script(project: LaunchProject, run_id: str) -> str:
    """What --dry-run shows for the same launch (blocktrain renders it, not submitit), with the
    paths of the launch that ran."""
    done = project.command("slurm-launch", "train", "--args", "exp.yaml", "--dry-run")
    assert done.returncode == 0, done.stderr
    launch_id = read_record(Layout(project.root), run_id).launch_id
    script = done.stdout[done.stdout.index("#!/bin/bash") :]
    return script.replace(f"/{DRY_RUN_ID}/", f"/{launch_id}/")


def _training(project: LaunchProject, run_id: str, attempt: int) -> bool:
    """Two progress lines in this attempt: it is past its start-up and polls should_stop.

    (A SIGTERM before the first poll is tested on its own: it requeues without a checkpoint.)
    """
    return project.log(run_id, attempt).count(" loss ") >= 2


def test_preempted_three_times_ends_bit_identical(project: LaunchProject, tmp_path: Path):
    """Three preemptions at random points, by both of Slurm's ways: four attempts, exact
    weights. (A time limit on the cluster: tests/integration/multinode.)"""
    rng = random.Random()
    steps = 1200
    (project.root / "exp.yaml").write_text(
        f"steps: {steps}\nstep_seconds: 0.05\ncheckpoint_every: 400\n"
    )
    run_id, job_id = project.launch(
        "train", "--args", "exp.yaml", "--slurm", "restarts.preemptions=3",
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
    project.wait(
        lambda: project.run_status(run_id) in FINAL and project.queue_state(job_id) is None,
        400,
        "the run to end",
    )
    assert project.run_status(run_id) == "FINISHED"
    tags = project.tags(run_id)
    assert tags["blocktrain.attempt"] == "4"
    assert [v for _, v in project.metric_history(run_id, "attempt")] == [1.0, 2.0, 3.0, 4.0]
    counts = (project.root / ".blocktrain" / "runs" / run_id / "restarts.json").read_text()
    assert counts.replace(" ", "") == '{"preemption":3}'
    for attempt in (2, 3, 4):
        assert "resumed from step" in project.log(run_id, attempt)
    final = project.root / ".blocktrain" / "runs" / run_id / "final.pt"
    assert same_weights(final, reference_weights(project, tmp_path, steps))


def test_stop_then_relaunch_by_run_id_resumes_and_finishes(project: LaunchProject, tmp_path: Path):
    steps = 600
    (project.root / "exp.yaml").write_text(
        f"steps: {steps}\nstep_seconds: 0.05\ncheckpoint_every: 1000\n"
    )
    run_id, job_id = project.launch("train", "--args", "exp.yaml")
    project.wait(lambda: _training(project, run_id, 1), 180, "attempt 1 to train")
    stopped = project.command("slurm-stop", run_id[:8])
    assert stopped.returncode == 0, stopped.stderr
    assert "checkpoints and stops" in stopped.stdout
    project.wait(
        lambda: project.run_status(run_id) == "KILLED", 120, "the stopped run to end KILLED"
    )
    project.wait(lambda: project.queue_state(job_id) is None, 120, "the job to leave the queue")
    assert "stopping after" in project.log(run_id, 1)
    # The job's own output says the attempt stopped, not submitit's "Job completed successfully".
    launches = project.root / ".blocktrain" / "launches"
    [slurm_out] = launches.glob(f"*/submitit/{job_id}_0_log.out")
    assert "completed successfully" not in slurm_out.read_text()
    assert "the run is stopped (slurm-stop)" in slurm_out.with_suffix(".err").read_text()
    # Arguments are immutable, and a run with a job in the queue is not relaunched.
    changed = project.command("slurm-launch", "train", "--run-id", run_id, "--set", "steps=5")
    assert changed.returncode == 2
    assert "immutable" in changed.stderr
    relaunched = project.command("slurm-launch", "train", "--run-id", run_id)
    assert relaunched.returncode == 0, relaunched.stderr
    again = project.command("slurm-launch", "train", "--run-id", run_id)
    assert again.returncode == 2
    assert "still has a job in the queue" in again.stderr
    project.wait(
        lambda: project.run_status(run_id) == "FINISHED", 300, "the relaunched run to finish"
    )
    assert project.tags(run_id)["blocktrain.attempt"] == "2"
    assert "resumed from step" in project.log(run_id, 2)
    final = project.root / ".blocktrain" / "runs" / run_id / "final.pt"
    assert same_weights(final, reference_weights(project, tmp_path, steps))


def test_sigkilled_job_ends_failed_and_the_watcher_reports_it(project: LaunchProject):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from webhook_server import WebhookServer

    with WebhookServer() as hook:
        project.env["BLOCKTRAIN_SLACK_WEBHOOK_URL"] = hook.url
        (project.root / "exp.yaml").write_text("steps: 5000\nstep_seconds: 0.05\n")
        run_id, job_id = project.launch("train", "--args", "exp.yaml")
        project.wait(lambda: _training(project, run_id, 1), 180, "attempt 1 to train")
        assert project.run_status(run_id) == "RUNNING"
        # SIGKILL the task processes themselves, as the OOM killer would.
        pattern = rf"^\S*python\S* -u -m submitit.core._submit {project.root}"  # not srun's line
        tasks = project.command("pgrep", "-f", pattern)
        pids = [int(p) for p in tasks.stdout.split()]
        assert len(pids) == 2, tasks
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        project.wait(
            lambda: project.run_status(run_id) == "FAILED", 180, "the watcher to mark the run"
        )
        project.wait(
            lambda: any("ended without reporting" in b["text"] for b in hook.bodies),
            60,
            "the message",
        )
    assert project.job_state(job_id) == "FAILED"


def test_cancel_marks_the_run_killed_at_once(project: LaunchProject):
    (project.root / "exp.yaml").write_text("steps: 5000\nstep_seconds: 0.05\n")
    run_id, job_id = project.launch("train", "--args", "exp.yaml")
    cancelled = project.command("slurm-cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert project.run_status(run_id) == "KILLED"
    project.wait(lambda: project.queue_state(job_id) is None, 60, "the job to leave the queue")


def _snapshot(project: LaunchProject) -> tuple[list[str], int]:
    runs = project.root / ".blocktrain" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else [], len(project.runs())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trian", "--args", "exp.yaml"], "restartable has no function 'trian'"),
        (["train", "--args", "bad.yaml"], "bad.yaml:1: steps: expected int, got str 'many'"),
        (["train", "--args", "exp.yaml", "--profile", "huge"], "no profile 'huge'"),
        (["train", "--args", "exp.yaml", "--slurm", "nodez=2"], "nodez: unknown field for Profile"),
        (
            ["train", "--args", "exp.yaml", "--slurm", "time=soon"],
            "time 'soon' is not a Slurm time",
        ),
        (["train", "--args", "exp.yaml", "--set", "stepz=3"], "unknown argument 'stepz' for train"),
        (
            ["train", "--args", "exp.yaml", "--sweep", "exp.yaml"],
            "either --args files or a --sweep",
        ),
        (["train", "--args", "missing.yaml"], "missing.yaml: no such arguments file"),
        (["train", "--run-id", "0123456789abcdef"], "no run or job matches '0123456789abcdef'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_creates_nothing(
    project: LaunchProject, argv: list[str], message: str
):
    (project.root / "exp.yaml").write_text("steps: 5\n")
    (project.root / "bad.yaml").write_text("steps: many\n")
    before = _snapshot(project)
    done = project.command("slurm-launch", *argv)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert _snapshot(project) == before
    assert project.command("squeue", "-h").stdout.strip() == ""


def test_unreachable_cluster_is_one_line_and_rolls_back(
    project: LaunchProject, slurm_cluster: SlurmCluster, tmp_path: Path
):
    dead = tmp_path / "dead.conf"
    text = slurm_cluster.conf.read_text()
    dead.write_text(
        "".join(
            "SlurmctldPort=1\n" if line.startswith("SlurmctldPort=") else line
            for line in text.splitlines(keepends=True)
        )
    )  # the last line (an Include) must keep its newline: Slurm's parser needs it
    (project.root / "exp.yaml").write_text("steps: 5\n")
    project.env["SLURM_CONF"] = str(dead)
    done = project.command("slurm-launch", "train", "--args", "exp.yaml")
    assert done.returncode == 2
    assert done.stderr.startswith("slurm-launch: error: sbatch failed")
    assert "Unable to contact slurm controller" in done.stderr
    assert done.stderr.count("\n") == 1
    assert _snapshot(project) == ([], 0)
    assert not list((project.root / ".blocktrain" / "launches").iterdir())


STANDIN_APPTAINER = """\
#!/bin/bash
# A stand-in for `apptainer exec [OPTIONS] IMAGE COMMAND...` (Apptainer is not installed on the
# test machine): it records its arguments, applies --pwd, and runs COMMAND on the host.
echo "$*" >> "$APPTAINER_STANDIN_LOG"
[ "$1" = exec ] || { echo "stand-in handles only exec" >&2; exit 64; }
shift
while [ $# -gt 0 ]; do
    case "$1" in
        --nv) shift ;;
        --bind|-B) shift 2 ;;
        --pwd) cd "$2" || exit 65; shift 2 ;;
        -*) echo "stand-in: unknown option $1" >&2; exit 64 ;;
        *) break ;;
    esac
done
[ -f "$1" ] || { echo "stand-in: no image $1" >&2; exit 66; }
shift
exec "$@"
"""


def test_tasks_run_through_the_apptainer_standin_with_the_image_digest_logged(
    project: LaunchProject, tmp_path: Path
):
    """The Apptainer command line, run by STANDIN_APPTAINER (Apptainer cannot be installed
    here; Charliecloud runs real jobs in tests/integration/container)."""
    import hashlib

    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    standin = bin_dir / "apptainer"
    standin.write_text(STANDIN_APPTAINER)
    standin.chmod(0o755)
    calls = tmp_path / "apptainer-calls.log"
    image = tmp_path / "training.sif"
    image.write_bytes(b"not a real image, but bytes to digest\n" * 1000)
    project.env["PATH"] = f"{bin_dir}:{project.env['PATH']}"
    project.env["APPTAINER_STANDIN_LOG"] = str(calls)
    (project.root / "exp.yaml").write_text("steps: 20\nstep_seconds: 0.0\n")

    data = tmp_path / "data-cache"
    project.env["DATA_PATH"] = str(data)
    container = f"container={{runtime: apptainer, image: {image}, binds: [/tmp:/tmp]}}"
    run_id, _ = project.launch("train", "--args", "exp.yaml", "--slurm", container)
    project.wait(lambda: project.run_status(run_id) in FINAL, 240, f"run {run_id} to end")
    assert project.run_status(run_id) == "FINISHED"
    lines = calls.read_text().splitlines()
    assert len(lines) == 2  # one `apptainer exec` per task
    root = project.root
    for line in lines:
        binds = f"--bind {root}:{root} --bind {data}:{data} --bind /tmp:/tmp"
        assert line.startswith(f"exec {binds} --pwd {root} {image}")
        assert "--nv" not in line  # a CPU profile asks for no GPU driver
        assert "-m submitit.core._submit" in line
    tags = project.tags(run_id)
    assert tags["container.runtime"] == "apptainer"
    assert tags["container.image"] == str(image)
    assert tags["container.digest"] == "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()


def test_fifty_concurrent_launches_lose_no_record(project: LaunchProject):
    """After the project's first launch (which creates its MLflow database), 50 slurm-launch
    processes at once, writing their runs without mlflow: 50 readable records, 50 runs, 50
    held jobs."""
    count = 50
    (project.root / "exp.yaml").write_text("steps: 5\n")
    argv = ["slurm-launch", "train", "--args", "exp.yaml", "--slurm", "sbatch.hold=true"]
    first = project.command(*argv)
    assert first.returncode == 0, first.stderr
    first_run = first.stdout.split()[1]
    children = [
        subprocess.Popen(
            argv,
            cwd=project.root,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    outputs = [child.communicate(timeout=600) for child in children]
    failures = [err for child, (_, err) in zip(children, outputs, strict=True) if child.returncode]
    assert failures == [], failures[0]
    printed = {out.split()[1]: out.split()[3] for out, _ in outputs}
    assert len(printed) == count
    records = {}
    for path in (project.root / ".blocktrain" / "runs").glob("*/run.json"):
        record = json.loads(path.read_text())
        records[record["run_id"]] = record["jobs"][-1]["job_id"]
    records.pop(first_run)
    assert records == printed
    assert {r["run_id"] for r in project.runs()} == {*printed, first_run}
    held = project.command("squeue", "-h", "-o", "%i|%r", "-t", "PD").stdout.split()
    held_jobs = {line.split("|")[0] for line in held if line.endswith("|JobHeldUser")}
    assert set(printed.values()) <= held_jobs
