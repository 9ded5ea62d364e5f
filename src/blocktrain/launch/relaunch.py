"""Relaunching a recorded run: the same MLflow run, arguments and code copy, the next attempt.

Refused while a job of the run is still queued, and when the given arguments contradict the
recorded ones (logged params are immutable). The run's stop and finished markers are cleared,
so that the new job neither stops at once nor skips the entry function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from blocktrain.core.paths import Layout
from blocktrain.entry import resolve
from blocktrain.errors import BlocktrainError
from blocktrain.launch import executors, mlflowruns
from blocktrain.launch.codecopy import import_paths
from blocktrain.launch.profile import load_profile
from blocktrain.launch.records import RunRecord, read_record
from blocktrain.launch.request import LaunchRequest, LaunchResult
from blocktrain.launch.runjobs import Prepared, dry_run, importable, record_jobs, submit_runs
from blocktrain.launch.submission import Scheduler
from blocktrain.launch.worker import load_entry


def relaunch(
    request: LaunchRequest, run_id: str, layout: Layout, scheduler: Scheduler | None = None
) -> LaunchResult:
    """Submit a recorded run again, resuming its MLflow run at the next attempt.

    Without ``scheduler``, the run's latest job is looked for where it ran, and the new one
    goes where :mod:`.executors` says.
    """
    executors.checked(request.executor)
    record = read_record(layout, run_id)
    was = executors.chosen(record.executor)
    refuse_if_queued(record, scheduler or executors.scheduler_for(was, layout))
    with importable(import_paths(layout.launch(record.launch_id).code)):
        refuse_changed_arguments(record, load_entry(record.entry), request)
    profile_name = request.profile or record.profile
    profile = load_profile(layout.root, profile_name, request.slurm)
    executor = executors.chosen(request.executor, profile.executor, record.executor)
    if request.dry_run:
        prepared = Prepared(
            entry=record.entry,
            profile_name=profile_name,
            profile=profile,
            sets=[record.args],
            labels=[record.run_id],
            executor=executor,
        )
        return dry_run(prepared, layout)
    store = mlflowruns.backend(record.tracking_uri, layout.root)
    attempts, _ = mlflowruns.last_attempt(store, record.run_id)
    run = layout.run(record.run_id)
    run.finished_marker.unlink(missing_ok=True)
    run.stop_marker.unlink(missing_ok=True)
    chosen = scheduler or executors.scheduler_for(executor, layout)
    submitted = submit_runs(layout, profile, [record], attempts, chosen)
    launched = record_jobs(layout, [record], submitted, "relaunch")
    return LaunchResult(runs=tuple(launched), relaunched_after=attempts)


def refuse_if_queued(record: RunRecord, scheduler: Scheduler) -> None:
    own = [job.job_id for job in record.jobs]
    active = [e for e in scheduler.queued(own) if e.job_id in own] if own else []
    if active:
        jobs = ", ".join(f"{e.job_id} ({e.state})" for e in active)
        raise BlocktrainError(
            f"run {record.run_id} still has a job in the queue: {jobs}; stop it first"
        )


def refuse_changed_arguments(
    record: RunRecord, func: Callable[..., Any], request: LaunchRequest
) -> None:
    """Arguments given to a relaunch may add to the recorded ones, not contradict them."""
    sets = request.argument_sets()
    if len(sets) > 1:
        raise BlocktrainError("--run-id relaunches one run: give at most one --args file")
    given = sets[0]
    if not (given.files or given.overrides):
        return
    wanted = resolve(func, given.files, {**record.args, **given.overrides})
    changed = {k: (record.args.get(k), v) for k, v in wanted.items() if record.args.get(k) != v}
    if changed:
        shown = "; ".join(
            f"{k}: recorded {old!r}, now {new!r}" for k, (old, new) in changed.items()
        )
        raise BlocktrainError(
            f"run {record.run_id} has immutable arguments ({shown}); start a new run instead"
        )
