"""The :class:`~blocktrain.launch.slurm.submit.Scheduler` of jobs without Slurm.

Submitting gives the job a number (``L7``) from the project's counter, writes its state file
(:class:`~blocktrain.launch.local.jobstate.LocalJob`) and starts its supervisor
(:mod:`.supervisor`). The queue is the state files (:mod:`.queries`).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

from blocktrain.core.atomic import locked
from blocktrain.core.paths import Layout
from blocktrain.core.values import JSON, to_jsonable
from blocktrain.errors import BlocktrainError
from blocktrain.launch.local import jobstate, queries, supervisor
from blocktrain.launch.local.jobstate import Element, LocalJob, LocalPlan
from blocktrain.launch.profile import time_minutes
from blocktrain.launch.slurm.commands import QueueEntry
from blocktrain.launch.slurm.submit import BatchJobs, Submitted
from blocktrain.restart.jobspec import JobSpec

EXECUTOR = "local"


class LocalScheduler:
    """Jobs on this machine, each run by a supervisor process instead of Slurm."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def submit(self, jobs: BatchJobs) -> list[Submitted]:
        job_id = jobstate.job_id(next_number(self.layout))
        job = LocalJob(
            plan=local_plan(jobs, job_id),
            elements=[Element() for _ in jobs.specs],
            submitted=time.time(),
        )
        supervisor.write_job(self.layout, job)
        log = Path(job.plan.output) / f"{job_id}_supervisor.log"
        try:
            supervisor.start_supervisor(self.layout, job_id, jobs.host_python, log)
        except RuntimeError as exc:
            self.layout.local_job(job_id).unlink(missing_ok=True)
            raise BlocktrainError(str(exc)) from None
        return [
            Submitted(job_id=job.key(i), watcher_id=None, executor=EXECUTOR)
            for i in range(len(jobs.specs))
        ]

    def queued(self, job_ids: Sequence[str]) -> list[QueueEntry]:
        return queries.queued(self.layout, job_ids)


def next_number(layout: Layout) -> int:
    """The next local job number of the project, counted under the counter's lock."""
    path = layout.local_job_counter
    with locked(path) as fd:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        number = (int(text) if text.isdigit() else 0) + 1
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{number}\n".encode(), 0)
        return number


def local_plan(jobs: BatchJobs, job_id: str) -> LocalPlan:
    """The supervisor's plan for a submission's task sets (one element each)."""
    profile, first = jobs.profile, jobs.specs[0]
    return LocalPlan(
        job_id=job_id,
        array=len(jobs.specs) > 1,
        specs=[_spec_dict(spec) for spec in jobs.specs],
        job_name=jobs.plan.job_name,
        tasks=profile.world_size,
        cpus_per_task=profile.cpus_per_task,
        python=shlex.split(jobs.plan.python),
        env={name: str(value) for name, value in profile.env.items()},
        code_paths=list(jobs.code_paths),
        output=str(jobs.plan.folder),
        project_root=str(jobs.project_root),
        requeue_dir=first.requeue_dir,
        time_limit_s=time_minutes(profile.time) * 60,
        signal=profile.signal_name,
        lead_s=profile.signal_lead_s,
        parallel=profile.array_parallelism or 1,
    )


def _spec_dict(spec: JobSpec) -> dict[str, JSON]:
    """A spec as JSON, read back by each task (``JobSpec(**spec)``)."""
    value = to_jsonable(dataclasses.asdict(spec))
    return value if isinstance(value, dict) else {}
