"""Relaunching a recorded run: the same MLflow run, arguments and code copy, the next attempt.

Refused while a job of the run is still queued, when the run has finished (its weights start a
new run instead), and when the given arguments contradict the recorded ones (logged params are
immutable), or a ``--name`` the recorded one (the run keeps its name). Concurrent relaunches of
one run are serialized by the run's relaunch lock, held from the check of the queue until the
new job is in the run's record: the first submits, the others then find its job queued. The
run's stop marker is cleared, so that the new job does not stop at once. A run of a sweep makes
the sweep's parent run RUNNING again until its new job ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator
from typing import Any

from blocktrain.core import checkpointfiles
from blocktrain.core.atomic import locked
from blocktrain.core.paths import Layout, import_paths
from blocktrain.entry import load_entry, resolve
from blocktrain.errors import BlocktrainError
from blocktrain.launch import executors
from blocktrain.launch.containers import images
from blocktrain.launch.profile import load_profile
from blocktrain.launch.records import tracking
from blocktrain.launch.records.store import RunRecord, one_run, read_record
from blocktrain.launch.request import LaunchRequest, LaunchResult
from blocktrain.launch.runjobs import Prepared, dry_run, importable, record_jobs, submit_runs
from blocktrain.launch.slurm.submit import Scheduler
from blocktrain.launch.sweeps import naming, parentrun


def relaunch(
    request: LaunchRequest, run_id: str, layout: Layout, scheduler: Scheduler | None = None
) -> LaunchResult:
    """Submit a recorded run again, resuming its MLflow run at the next attempt.

    Without ``scheduler``, the run's latest job is looked for where it ran, and the new one
    goes where :mod:`.executors` says.
    """
    executors.checked(request.executor)
    if request.dry_run:
        return _relaunch(request, run_id, layout, scheduler)
    # Resolved first: the lock is the run's, and an id that names no run has no folder to hold it.
    run_id = one_run(layout, run_id).run_id
    with locked(layout.run(run_id).relaunch_lock):
        return _relaunch(request, run_id, layout, scheduler)


def _relaunch(
    request: LaunchRequest, run_id: str, layout: Layout, scheduler: Scheduler | None
) -> LaunchResult:
    record = read_record(layout, one_run(layout, run_id).run_id)
    refuse_other_name(record, naming.checked(request.name))
    was = executors.chosen(record.executor)
    refuse_if_queued(record, scheduler or executors.scheduler_for(was, layout))
    refuse_if_finished(layout, record)
    refuse_if_unloadable(layout, record)
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
    images.check_launch(profile.container, layout.root, os.environ)
    tracking.check_reachable(record.tracking_uri)
    store = tracking.backend(record.tracking_uri, layout.root)
    attempts, _ = tracking.last_attempt(store, record.run_id)
    # Tags, unlike params, may change: the run names the image its next attempt runs in.
    if profile.container is not None:
        store.log_batch(record.run_id, [], {}, images.tags(profile.container))
    run = layout.run(record.run_id)
    run.stop_marker.unlink(missing_ok=True)
    chosen = scheduler or executors.scheduler_for(executor, layout)
    with parent_reopened(layout, record):
        submitted = submit_runs(layout, profile, [record], attempts, chosen)
    launched = record_jobs(layout, [record], submitted, "relaunch")
    return LaunchResult(runs=tuple(launched), relaunched_after=attempts)


@contextlib.contextmanager
def parent_reopened(layout: Layout, record: RunRecord) -> Generator[None]:
    """The sweep's parent RUNNING before the run's new job can end (and close it again);
    closed again as it was if the submission fails."""
    if record.parent_run_id is None:
        yield
        return
    parentrun.reopen(layout, record.launch_id)
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # the submission's error is the one to show
            parentrun.settle(layout, record.launch_id)
        raise


def refuse_other_name(record: RunRecord, name: str | None) -> None:
    if name is not None and name != record.name:
        raise BlocktrainError(
            f"run {record.run_id} is named {record.name!r} and a relaunch keeps its name; "
            "drop --name"
        )


def refuse_if_queued(record: RunRecord, scheduler: Scheduler) -> None:
    own = [job.job_id for job in record.jobs]
    active = [e for e in scheduler.queued(own) if e.job_id in own] if own else []
    if active:
        jobs = ", ".join(f"{e.job_id} ({e.state})" for e in active)
        raise BlocktrainError(
            f"run {record.run_id} still has a job in the queue: {jobs}; stop it first"
        )


def refuse_if_finished(layout: Layout, record: RunRecord) -> None:
    """A finished run's metrics and weights are final: rerunning would train past its end and
    rewrite them. Its checkpoints stay available to start a new run from."""
    if layout.run(record.run_id).finished_marker.exists():
        raise BlocktrainError(
            f"run {record.run_id} has finished and is not rerun; start a new run from its "
            f"weights (blocktrain.train.load_weights(model, run_id={record.run_id!r}) in the "
            "entry function, or an argument of yours that names the run)"
        )


def refuse_if_unloadable(layout: Layout, record: RunRecord) -> None:
    """A run whose checkpoints all fail their checksums could only train again from step 0,
    into the same run: its metric history would hold its steps twice. (Only the run's own
    checkpoint folder is looked at; a training that keeps its checkpoints elsewhere is stopped
    by the trainer at its start instead.)"""
    folder = layout.checkpoints(record.run_id)
    passed = checkpointfiles.skipped(folder)
    if passed and len(passed) == len(checkpointfiles.numbered(folder)):
        newest, why = passed[0]
        raise BlocktrainError(
            f"run {record.run_id}: no checkpoint in {folder} can be loaded (the newest, "
            f"{newest.name}, {why}); a relaunch would train it again from step 0 into the same "
            "run: put a good checkpoint back, or start a new run with its arguments"
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
