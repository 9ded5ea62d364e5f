"""What the ``slurm-*`` commands read and ask of jobs without Slurm (``--executor local``).

The queue is the jobs' state files: an element is queued while it is PENDING, RUNNING or
REQUEUED and its supervisor lives. ``slurm-stop`` signals the tasks of an element as ``scancel
--signal`` would; ``slurm-cancel`` leaves a cancel file that the supervisor acts on. Light on
purpose: ``slurm-status`` and ``slurm-log`` import it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from blocktrain.core.paths import Layout
from blocktrain.launch.local import jobstate, supervisor
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
            jobs[base] = supervisor.read_job(layout, base)
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return jobs


def entries(layout: Layout, job_ids: Sequence[str]) -> list[QueueEntry]:
    """Every element of these jobs in ``squeue``'s shape, final ones included."""
    now = time.time()
    found: list[QueueEntry] = []
    for job in read_jobs(layout, job_ids).values():
        supervised = supervisor.alive(job.supervisor_pid)
        found += [
            jobstate.queue_entry(job, i, now, supervised=supervised)
            for i in range(len(job.elements))
        ]
    return found


def signal_tasks(layout: Layout, job_id: str, signal_name: str) -> bool:
    """Send a signal to the tasks of a running element; False when none runs."""
    job = read_jobs(layout, [job_id]).get(job_id.split("_", 1)[0])
    if job is None or not supervisor.alive(job.supervisor_pid):
        return False
    element = job.elements[jobstate.element_index(job_id)]
    if element.state != "RUNNING" or not element.pids:
        return False
    supervisor.signal_pids(element.pids, signal_name)
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
