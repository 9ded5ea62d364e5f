"""A signal to one rank while the attempt starts: the attempt ends at once, never hangs.

The rank that gets it is held (SIGSTOP) from the instant its restart protocol is in place
until the other rank waits for it where the ranks meet (the process group's rendezvous, where
torch's wait lets no signal handler run), then signalled and let go. The attempt must end and be
requeued promptly, and the run finish as if nothing happened.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from blocktrain.launch.local.supervisor import FAILED_TASK_GRACE_S
from conftest import LocalProject

pytestmark = pytest.mark.integration
RUN_TIMEOUT_S = 300


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (the SigCgt mask in /proc)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


def _listening(port: int) -> bool:
    """Whether a socket listens on ``port`` (rank 0's store: the rendezvous has begun)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _master_port(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    values = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    return int(values["MASTER_PORT"])


def _pids(project: LocalProject, job_id: str) -> list[int]:
    [element] = project.local_job(job_id)["elements"]
    return list(element["pids"]) if element["state"] == "RUNNING" else []


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.002)


@pytest.mark.parametrize(
    ("signum", "victim", "within_s"),
    [
        (signal.SIGTERM, 1, 20.0),
        (signal.SIGTERM, 0, 20.0),
        (signal.SIGKILL, 1, FAILED_TASK_GRACE_S + 20.0),
    ],
    ids=["TERM-rank1", "TERM-rank0", "KILL-rank1"],
)
def test_a_signal_to_one_rank_during_start_up_requeues_the_attempt(
    project: LocalProject, signum: int, victim: int, within_s: float
):
    (project.root / "exp.yaml").write_text("steps: 60\nstep_seconds: 0.05\ncheckpoint_every: 20\n")
    run_id, job_id = project.launch("train", "--args", "exp.yaml", "--executor", "local")
    project.wait(lambda: len(_pids(project, job_id)) == 2, 60, "the tasks to start")
    pids = _pids(project, job_id)
    target, other = pids[victim], pids[1 - victim]
    _wait(lambda: _catches(target, signal.SIGUSR2), 60, "the restart protocol of the rank")
    os.kill(target, signal.SIGSTOP)
    if victim == 1:
        port = _master_port(other)
        _wait(lambda: _listening(port), 120, "rank 0 to wait in the rendezvous")
    else:
        _wait(lambda: _catches(other, signal.SIGUSR2), 60, "rank 1's restart protocol")
        time.sleep(5)  # rank 1 imports the entry module, then tries to reach rank 0
    time.sleep(0.5)
    signalled = time.monotonic()
    os.kill(target, signum)
    os.kill(target, signal.SIGCONT)

    def requeued() -> bool:
        [element] = project.local_job(job_id)["elements"]
        return element["restart_count"] >= 1 or element["state"] not in ("RUNNING", "REQUEUED")

    project.wait(requeued, within_s, "the attempt to end", interval=0.2)
    ended_after = time.monotonic() - signalled
    [element] = project.local_job(job_id)["elements"]
    assert element["restart_count"] == 1, f"not requeued: {element}\n{project.diagnostics()}"
    print(f"attempt ended and requeued {ended_after:.1f} s after the signal")

    project.wait(
        lambda: project.run_status(run_id) in ("FINISHED", "FAILED", "KILLED"),
        RUN_TIMEOUT_S,
        "the run to end",
    )
    assert project.run_status(run_id) == "FINISHED"
    run_dir = project.root / ".blocktrain" / "runs" / run_id
    assert json.loads((run_dir / "restarts.json").read_text()) == {"preemption": 1}
    assert "resumed from step" not in project.log(run_id, 2)  # nothing was trained before
    assert "step 50 loss" in project.log(run_id, 2)
