"""What the ``slurm-*`` commands read and ask of jobs without Slurm (``--executor local``).

The queue is the jobs' state files: an element is queued while it is PENDING, RUNNING or
REQUEUED and its supervisor lives. The first command that reads a job whose supervisor died
without ending it (the machine restarted, its process group killed) ends it: its leftover
tasks are killed and its runs get their final state, as Slurm's watcher job does for a node
it lost. ``slurm-stop`` signals the tasks of an element as ``scancel
--signal`` would; ``slurm-cancel`` leaves a cancel file that the supervisor acts on. Light on
purpose: ``slurm-status`` and ``slurm-log`` import it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from blocktrain.core.atomic import locked
from blocktrain.core.outcome import one_line
from blocktrain.core.paths import Layout
from blocktrain.launch.local import jobfiles, jobstate
from blocktrain.launch.local.jobstate import LocalJob
from blocktrain.launch.slurm.commands import QueueEntry

CANCEL_WAIT_S = 60.0


def queued(layout: Layout, job_ids: Sequence[str]) -> list[QueueEntry]:
    """The elements of these jobs still queued or running, as ``squeue`` lists them."""
    return [e for e in entries(layout, job_ids) if e.state in jobstate.ACTIVE]


def read_jobs(layout: Layout, job_ids: Sequence[str]) -> dict[str, LocalJob]:
    """The state files of these jobs (by base id); missing or unreadable ones are left out."""
    jobs: dict[str, LocalJob] = {}
    for base in {job_id.split("_", 1)[0] for job_id in job_ids}:
        try:
            jobs[base] = jobfiles.read_job(layout, base)
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return jobs


def entries(layout: Layout, job_ids: Sequence[str]) -> list[QueueEntry]:
    """Every element of these jobs in ``squeue``'s shape, final ones included."""
    jobs = read_jobs(layout, job_ids)
    lost = [j for j in jobs.values() if jobstate.abandoned(j, supervised=_supervised(j))]
    if lost:
        reap(layout, [j.plan.job_id for j in lost])
        jobs = read_jobs(layout, job_ids)
    now = time.time()
    found: list[QueueEntry] = []
    for job in jobs.values():
        supervised = jobfiles.alive(job.supervisor_pid)
        found += [
            jobstate.queue_entry(job, i, now, supervised=supervised)
            for i in range(len(job.elements))
        ]
    return found


def _supervised(job: LocalJob) -> bool:
    return jobfiles.alive(job.supervisor_pid)


def reap(layout: Layout, job_ids: Sequence[str]) -> None:
    """End the elements of these jobs that a dead supervisor left unfinished, and settle
    their runs (:func:`blocktrain.launch.slurm.finalize.finalize`). Under the job's lock, so
    that two commands looking at once end it once; an element is marked ended only after its
    run was settled, so that a tracking server that is down only delays it to the next look.
    """
    from blocktrain.launch.slurm import finalize  # MLflow's client, only for a lost job

    for base in job_ids:
        with locked(layout.local_job(base).with_suffix(".lock")):
            try:
                job = jobfiles.read_job(layout, base)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            lost = jobstate.abandoned(job, supervised=_supervised(job))
            if not lost:
                continue
            for index in lost:
                jobfiles.signal_pids(_own_tasks(job, index), "KILL")
            runs = [str(job.plan.specs[i]["run_id"]) for i in lost]
            try:
                finalize.finalize(layout, runs, lambda _: "FAILED")
            except Exception as exc:  # noqa: BLE001 - the queue is still shown
                sys.stderr.write(f"blocktrain: job {base} lost its supervisor; its runs could "
                                 f"not be marked ended yet: {one_line(exc)}\n")  # fmt: skip
                continue
            jobstate.mark_lost(job, lost, time.time())
            jobfiles.write_job(layout, job)


def _own_tasks(job: LocalJob, index: int) -> list[int]:
    """The element's recorded task pids that are still its tasks (a pid may have been reused
    since the machine restarted)."""
    own_argv = ["task", job.plan.project_root, job.plan.job_id, str(index)]
    own: list[int] = []
    for pid in job.elements[index].pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        if argv[-5:-1] == own_argv or argv[-4:] == own_argv:  # with or without a final NUL
            own.append(pid)
    return own


def signal_tasks(layout: Layout, job_id: str, signal_name: str) -> bool:
    """Send a signal to the tasks of a running element; False when none runs."""
    job = read_jobs(layout, [job_id]).get(job_id.split("_", 1)[0])
    if job is None or not jobfiles.alive(job.supervisor_pid):
        return False
    element = job.elements[jobstate.element_index(job_id)]
    if element.state != "RUNNING" or not element.pids:
        return False
    jobfiles.signal_pids(element.pids, signal_name)
    return True


def cancel(layout: Layout, job_id: str, wait_s: float = CANCEL_WAIT_S) -> str | None:
    """Ask the supervisor to end an element at once; its final state once it has (None when
    it did not within ``wait_s``, or no supervisor runs it any more)."""
    path = layout.local_cancel(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        entry = next((e for e in entries(layout, [job_id]) if e.job_id == job_id), None)
        if entry is None:
            break
        if entry.state not in jobstate.ACTIVE:
            path.unlink(missing_ok=True)
            return entry.state
        time.sleep(0.2)
    return None
