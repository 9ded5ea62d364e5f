"""One rank of a 2-node run fails: srun (``--kill-on-bad-exit``) ends the other within seconds,
and the failure counts as a crash, not as the preemption the other's SIGTERM looks like.

- rank 1 SIGKILLed while the ranks meet (the rendezvous), then again while they train: each
  attempt ends within seconds (the rendezvous would otherwise wait half an hour for it), is
  requeued within the crash budget, and the run finishes;
- rank 1 alone crashes the same way at every start: the crash-loop guard ends the run FAILED
  after two attempts instead of requeueing it as a preemption forever.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from launch_project import LaunchProject  # pyright: ignore[reportMissingImports]

from procfs import environ

pytestmark = pytest.mark.integration
FINAL = ("FINISHED", "FAILED", "KILLED")
# Slurm's KillWait on the local cluster is 5 s: the survivor must be gone well before the
# rendezvous's own timeout (1800 s), whether it left on the SIGTERM or was killed after it.
LEAVES_WITHIN_S = 20.0
RANK_ONE_CRASHES = '''
from pathlib import Path

import blocktrain
from blocktrain import restart


@blocktrain.entrypoint
def train(*, steps: int = 50) -> int:
    """Rank 1 reads a file that is missing at every start; rank 0 trains."""
    import torch.distributed as dist

    if dist.get_rank() == 1:
        Path("missing-data").read_bytes()
    for _ in range(steps):
        if restart.should_stop():
            restart.stop_now()
    return steps
'''
NOTE = (
    "FileNotFoundError: [Errno 2] No such file or directory: 'missing-data' (not requeued: "
    "the previous attempt failed the same way before its first step; fix the cause, then run "
    "slurm-launch --run-id {run_id})"
)


def task_pid(job_id: str, rank: int, attempt: int) -> int | None:
    """The Python process of ``rank`` in ``attempt`` of the job (not its wrapping shell)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0] or not Path(argv[0].decode()).name.startswith("python"):
            continue
        if b"submitit.core._submit" not in argv:
            continue
        env = environ(int(entry.name))
        if (
            env.get("SLURM_JOB_ID") == job_id
            and env.get("SLURM_PROCID") == str(rank)
            and env.get("SLURM_RESTART_COUNT", "0") == str(attempt - 1)
        ):
            return int(entry.name)
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_rank_one(project: LaunchProject, job_id: str, attempt: int) -> float:
    """SIGKILL rank 1 of the attempt; how long rank 0 outlived it."""
    survivor = project.wait(lambda: task_pid(job_id, 0, attempt), 60, "rank 0 of the attempt")
    victim = project.wait(lambda: task_pid(job_id, 1, attempt), 60, "rank 1 of the attempt")
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    project.wait(lambda: not alive(survivor), 120, "rank 0 to leave", interval=0.1)
    return time.monotonic() - killed


def restarts(project: LaunchProject, run_id: str) -> dict[str, int]:
    return json.loads((project.root / ".blocktrain/runs" / run_id / "restarts.json").read_text())


def test_a_rank_killed_at_start_up_and_in_training_is_requeued_as_a_crash(
    project: LaunchProject,
) -> None:
    (project.root / "exp.yaml").write_text("steps: 200\nstep_seconds: 0.05\ncheckpoint_every: 10\n")
    run_id, job_id = project.launch(
        "train", "--args", "exp.yaml", "--slurm", "nodes=2", "--slurm", "tasks_per_node=1",
        "--slurm", "restarts.crashes=2",
    )  # fmt: skip
    rendezvous = project.root / ".blocktrain/runs" / run_id / "rendezvous" / f"{job_id}-0.port"
    # Attempt 1: rank 0 has published its port, so it meets (or is about to) the rank killed.
    project.wait(rendezvous.exists, 120, "rank 0 to publish its port", interval=0.05)
    assert kill_rank_one(project, job_id, 1) < LEAVES_WITHIN_S
    # Attempt 2: killed while training; rank 0's collectives fail, or srun's SIGTERM ends it.
    project.wait(lambda: project.log(run_id, 2).count(" loss ") >= 3, 180, "attempt 2 to train")
    assert kill_rank_one(project, job_id, 2) < LEAVES_WITHIN_S
    project.wait(
        lambda: project.run_status(run_id) in FINAL and project.queue_state(job_id) is None,
        300,
        "the run to end",
    )
    assert project.run_status(run_id) == "FINISHED"
    assert project.tags(run_id)["blocktrain.attempt"] == "3"
    assert restarts(project, run_id) == {"crash": 2}
    assert "resumed from step" in project.log(run_id, 3)


def test_one_ranks_crash_at_every_start_ends_failed_by_the_crash_guard(
    project: LaunchProject,
) -> None:
    (project.root / "ranked.py").write_text(RANK_ONE_CRASHES)
    started = time.monotonic()
    run_id, job_id = project.launch(
        "ranked:train", "--slurm", "nodes=2", "--slurm", "tasks_per_node=1",
        "--slurm", "restarts.crashes=3",
    )  # fmt: skip
    project.wait(
        lambda: project.run_status(run_id) in FINAL and project.queue_state(job_id) is None,
        300,
        "the run to end",
    )
    assert time.monotonic() - started < 240
    note = NOTE.format(run_id=run_id)
    assert project.run_status(run_id) == "FAILED"
    logs = project.root / ".blocktrain" / "logs" / run_id
    assert sorted(p.name for p in logs.glob("attempt-*")) == ["attempt-1", "attempt-2"]
    assert "FileNotFoundError" in project.log(run_id, 2, rank=1, stream="err")
    assert restarts(project, run_id) == {"crash": 1}
    assert project.status_file(run_id)["reason"] == note
    # Rank 1 waited for rank 0 to report: its collective failed once rank 1 left the group,
    # and it ended the run with rank 1's line.
    assert project.tags(run_id)["blocktrain.attempt"] == "2"
    assert f"blocktrain: {note}" in project.log(run_id, 2, stream="err")
