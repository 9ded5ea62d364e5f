"""The jobs (Slurm's, or local ones) of recorded runs: their batch plan and task specs, handed to a
:class:`~blocktrain.launch.slurm.submit.Scheduler`, then added to the run records; and the batch
script a dry run shows instead.

Shared by new launches (:mod:`.launcher`) and relaunches (:mod:`.relaunch`). Must not create
runs or records: they exist before their jobs are submitted.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from blocktrain.core.paths import LaunchFiles, Layout, import_paths
from blocktrain.core.values import JSON
from blocktrain.launch.codecopy import planned_import_paths
from blocktrain.launch.profile import Profile, time_minutes
from blocktrain.launch.records.store import JobEntry, RunRecord, update_record
from blocktrain.launch.request import LaunchedRun, LaunchResult
from blocktrain.launch.slurm import batch
from blocktrain.launch.slurm.submit import BatchJobs, Scheduler, Submitted
from blocktrain.restart.jobspec import JobSpec

DRY_RUN_ID = "DRY-RUN"
"""The launch id a dry run's batch script shows in its paths."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Prepared:
    """A validated launch, before anything is written."""

    entry: str
    """``module:function``."""
    profile_name: str
    profile: Profile
    sets: list[dict[str, JSON]]
    """Every argument of every run, resolved against the entry function's signature."""
    labels: list[str]
    name: str | None = None
    """The MLflow run name (of each element: ``name-0``, ...)."""
    executor: str = "slurm"
    """``slurm`` or ``local``."""


@contextlib.contextmanager
def importable(paths: Sequence[str]) -> Generator[None]:
    """The project's modules importable (``src/`` layout first) while the entry is loaded."""
    saved = list(sys.path)
    sys.path[:0] = paths
    try:
        yield
    finally:
        sys.path[:] = saved


def dry_run(prepared: Prepared, layout: Layout) -> LaunchResult:
    """Each argument set as a ``#`` line, then the batch script, as :data:`DRY_RUN_ID`."""
    files = layout.launch(DRY_RUN_ID)
    code_paths = planned_import_paths(layout.root, files.code)
    plan = batch_plan(prepared.profile, prepared.entry, layout, files, code_paths)
    shown = [
        f"# {label}: {json.dumps(values, sort_keys=True)}\n"
        for label, values in zip(prepared.labels, prepared.sets, strict=True)
    ]
    where = (
        ["# executor local: the tasks run on this machine, started as the script's srun would\n"]
        if prepared.executor == "local"
        else []
    )
    return LaunchResult(plan="".join(shown + where) + batch.render(plan, len(prepared.sets)))


def batch_plan(
    profile: Profile, entry: str, layout: Layout, files: LaunchFiles, code_paths: list[str]
) -> batch.BatchPlan:
    return batch.plan(
        profile,
        job_name=entry.rpartition(":")[2],
        folder=files.submitit,
        project_root=layout.root,
        host_python=sys.executable,
        code_paths=code_paths,
        requeue_dir=files.requeue,
    )


def submit_runs(
    layout: Layout,
    profile: Profile,
    records: Sequence[RunRecord],
    attempt_base: int,
    scheduler: Scheduler,
) -> list[Submitted]:
    """Submit one task set per record (an array for several), from their launch's code copy."""
    files = layout.launch(records[0].launch_id)
    files.requeue.mkdir(parents=True, exist_ok=True)
    code_paths = import_paths(files.code)
    jobs = BatchJobs(
        plan=batch_plan(profile, records[0].entry, layout, files, code_paths),
        specs=tuple(job_spec(layout, profile, r, attempt_base) for r in records),
        profile=profile,
        code_paths=tuple(code_paths),
        project_root=layout.root,
        host_python=sys.executable,
        watcher_log=files.watcher_log,
    )
    return scheduler.submit(jobs)


def job_spec(layout: Layout, profile: Profile, record: RunRecord, attempt_base: int) -> JobSpec:
    files = layout.launch(record.launch_id)
    return JobSpec(
        run_id=record.run_id,
        entry=record.entry,
        args=record.args,
        code_dir=str(files.code),
        run_dir=str(layout.run(record.run_id).folder),
        log_dir=str(layout.logs),
        requeue_dir=str(files.requeue),
        attempt_base=attempt_base,
        restart_signal=profile.signal_name,
        lead_s=profile.signal_lead_s,
        time_limit_s=time_minutes(profile.time) * 60,
        budgets={
            "timeout": profile.restarts.timeouts,
            "preemption": profile.restarts.preemptions,
            "crash": profile.restarts.crashes,
        },
        tracking_uri=record.tracking_uri,
        experiment=record.experiment,
        run_name=record.name,
    )


def record_jobs(
    layout: Layout, records: Sequence[RunRecord], submitted: Sequence[Submitted], kind: str
) -> list[LaunchedRun]:
    """Add each run's new job to its record."""
    launched: list[LaunchedRun] = []
    for record, job in zip(records, submitted, strict=True):
        entry = JobEntry(
            job_id=job.job_id,
            submitted=now(),
            kind=kind,
            watcher_id=job.watcher_id,
            executor=job.executor,
        )
        update_record(layout, record.run_id, lambda r, e=entry: r.jobs.append(e))
        logs = layout.run_logs(record.run_id)
        launched.append(LaunchedRun(run_id=record.run_id, job_id=job.job_id, logs=logs))
    return launched


def now() -> str:
    """The time stamp of records and job entries."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
