"""The launch flow: validate, record and submit new runs of an entry function, or relaunch one.

:func:`launch` takes a :class:`LaunchRequest` and returns a :class:`LaunchResult`. Nothing is
created until the arguments and the profile are valid. Then, in order: a frozen copy of the
code, one MLflow run per argument set (each named by :mod:`.sweeps.naming`; several are nested under
a parent run, :mod:`.sweeps.parentrun`), the run records, and one submission (a job array when
there are several sets). A failed submission removes what was created: MLflow runs, records,
run and launch folders. Relaunches are :mod:`.relaunch`'s.

Slurm is reached only through a :class:`~blocktrain.launch.slurm.submit.Scheduler`: the cluster's,
or :class:`~blocktrain.launch.local.scheduler.LocalScheduler` for ``executor`` ``local``. mlflow is
imported when the MLflow backend is opened and submitit when a job is submitted, so a dry run
loads neither. Must not print, exit or parse command lines: that is :mod:`blocktrain.cli.launch`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from blocktrain.core.paths import LaunchFiles, Layout, import_paths
from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, to_jsonable
from blocktrain.entry import importcost, load_entry, resolve
from blocktrain.entry.command import EntryFunction
from blocktrain.launch import executors
from blocktrain.launch.codecopy import freeze_code
from blocktrain.launch.containers import images
from blocktrain.launch.entryname import entry_spec
from blocktrain.launch.profile import Profile, as_dict, load_profile
from blocktrain.launch.records import tracking
from blocktrain.launch.records.store import RunRecord, write_record
from blocktrain.launch.relaunch import relaunch
from blocktrain.launch.request import LaunchedRun, LaunchRequest, LaunchResult
from blocktrain.launch.runjobs import (
    DRY_RUN_ID,
    Prepared,
    dry_run,
    importable,
    now,
    record_jobs,
    submit_runs,
)
from blocktrain.launch.slurm.submit import Scheduler
from blocktrain.launch.sweeps import naming, parentrun
from blocktrain.launch.sweeps.expand import parse_best
from blocktrain.launch.sweeps.summary import SweepPlan, plan_sweep
from blocktrain.track.backend import tracking_uri
from blocktrain.track.gitstate import git_state

__all__ = ["DRY_RUN_ID", "LaunchRequest", "LaunchResult", "LaunchedRun", "launch"]

DEFAULT_PROFILE = "local"


def launch(
    request: LaunchRequest,
    *,
    root: Path,
    scheduler: Scheduler | None = None,
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> LaunchResult:
    """Launch new runs in the project at ``root``, or relaunch ``request.run_id``.

    ``environ`` (default: this process's environment) names the tracking URI, the experiment
    and the secrets kept out of logged params. ``progress`` is told, one line at a time, how a
    launch of many runs goes (from :data:`PROGRESS_FROM` runs on), and what a slow import of
    the entry module cost.
    """
    layout = Layout(root)
    if request.run_id is not None:
        return relaunch(request, request.run_id, layout, scheduler)
    planned = prepare(request, layout, progress)
    if request.dry_run:
        return dry_run(planned.prepared, layout)
    chosen = scheduler or executors.scheduler_for(planned.prepared.executor, layout)
    env = os.environ if environ is None else environ
    return submit_new(planned, layout, chosen, env, progress)


@dataclass(frozen=True, kw_only=True, slots=True)
class Planned:
    """A validated new launch: what to submit, each run's name, and the sweep's parent run."""

    prepared: Prepared
    names: list[str]
    sweep: SweepPlan | None = None
    """The parent run of several runs; None for one."""


Progress = Callable[[str], object]
PROGRESS_FROM = 200
"""A launch of this many runs says how far it got, every tenth of the way."""


def counted(progress: Progress | None, what: str, total: int) -> Callable[[int], None]:
    """A callback of how many of ``total`` are done, that tells ``progress`` every tenth."""
    tenth = max(1, total // 10)

    def done(count: int) -> None:
        if (
            progress is not None
            and total >= PROGRESS_FROM
            and (count % tenth == 0 or count == total)
        ):
            progress(f"{what}: {count}/{total}")

    return done


def prepare(request: LaunchRequest, layout: Layout, progress: Progress | None = None) -> Planned:
    """Import the entry function, resolve every argument set, load the profile, name the runs."""
    executors.checked(request.executor)
    name = naming.checked(request.name)
    best = parse_best(request.best) if request.best else None
    entry = entry_spec(request.entry, request.module, layout.root)
    with importable(import_paths(layout.root)):
        func = timed_load(entry, layout.root, progress)
        sets = request.argument_sets()
        checked = counted(progress, "checking arguments", len(sets))
        resolved: list[dict[str, JSON]] = []
        for one in sets:
            resolved.append(resolve(func, one.files, one.overrides))
            checked(len(resolved))
    profile_name = request.profile or DEFAULT_PROFILE
    profile = load_profile(layout.root, profile_name, request.slurm)
    prepared = Prepared(
        entry=entry,
        profile_name=profile_name,
        profile=profile,
        sets=resolved,
        labels=[s.label for s in sets],
        name=name,
        executor=executors.chosen(request.executor, profile.executor),
    )
    function = entry.rpartition(":")[2]
    sweep = None
    if len(sets) > 1:
        sweep = plan_sweep(naming.parent_name(function, sets, name), sets, resolved, best)
    return Planned(prepared=prepared, names=naming.run_names(function, sets, name), sweep=sweep)


def timed_load(entry: str, root: Path, progress: Progress | None) -> EntryFunction:
    """The entry function; a slow import of its module is named, with what it brought in."""
    before = set(sys.modules)
    started = time.perf_counter()
    func = load_entry(entry)
    took = time.perf_counter() - started
    new = [name for name in list(sys.modules) if name not in before]
    files = {name: getattr(sys.modules.get(name), "__file__", None) for name in new}
    module = entry.partition(":")[0]
    line = importcost.slow_import_line(module, took, importcost.heavy_packages(new, files, root))
    if line is not None and progress is not None:
        progress(line)
    return func


@dataclass(slots=True)
class _Created:
    """What a new launch has created so far, removed again when it fails."""

    files: LaunchFiles
    store: tracking.RunWriter | None = None
    run_ids: list[str] = field(default_factory=list[str])

    def remove(self, layout: Layout) -> None:
        if self.store is not None:
            tracking.delete_runs(self.store, self.run_ids)
        for run_id in self.run_ids:
            shutil.rmtree(layout.run(run_id).folder, ignore_errors=True)
        shutil.rmtree(self.files.folder, ignore_errors=True)


def submit_new(
    planned: Planned,
    layout: Layout,
    scheduler: Scheduler,
    environ: Mapping[str, str],
    progress: Progress | None = None,
) -> LaunchResult:
    """Create the runs and submit them; on any failure, remove what was created."""
    images.check_launch(planned.prepared.profile.container, layout.root, environ)
    launch_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    created = _Created(layout.launch(launch_id))
    try:
        records = create_runs(planned, layout, launch_id, environ, created, progress=progress)
        submitted = submit_runs(layout, planned.prepared.profile, records, 0, scheduler)
    except BaseException:
        created.remove(layout)
        raise
    return LaunchResult(runs=tuple(record_jobs(layout, records, submitted, "launch")))


def create_runs(
    planned: Planned,
    layout: Layout,
    launch_id: str,
    environ: Mapping[str, str],
    created: _Created,
    *,
    progress: Progress | None = None,
) -> list[RunRecord]:
    """The frozen code, one SCHEDULED MLflow run per argument set (under a parent run when
    there are several), their records, and the sweep's record."""
    prepared, files = planned.prepared, created.files
    uri = tracking_uri(environ, layout.root)
    tracking.check_reachable(uri)
    freeze_code(layout.root, files.code)
    git = git_state(layout.root)
    diff_file = None
    if git is not None and git.dirty:
        diff_file = files.git_diff
        diff_file.write_text(git.diff)
    experiment = environ.get("MLFLOW_EXPERIMENT_NAME") or layout.root.name
    redact = Redactor.from_environ(environ)
    # A secret typed into --name (or a swept value that names a run) is masked like a param.
    names = [redact(name) for name in planned.names]
    sweep = planned.sweep
    created.store = tracking.writer(uri, layout.root, experiment, environ)
    parent_id, run_ids = tracking.create_runs(
        created.store,
        experiment=experiment,
        names=names,
        args=prepared.sets,
        tags=launch_tags(prepared, launch_id, files),
        git=git,
        diff_file=diff_file,
        redact=redact,
        parent=_parent(sweep, redact),
        created=counted(progress, "creating MLflow runs", len(names)),
    )
    created.run_ids = [*([parent_id] if parent_id else []), *run_ids]
    count = len(prepared.sets)
    records = [
        RunRecord(
            run_id=run_id,
            entry=prepared.entry,
            args=args,
            profile=prepared.profile_name,
            profile_values=profile_json(prepared.profile),
            launch_id=launch_id,
            created=now(),
            tracking_uri=uri,
            experiment=experiment,
            name=name,
            sweep_id=launch_id if count > 1 else None,
            array_index=i if count > 1 else None,
            parent_run_id=parent_id,
        )
        for i, (run_id, args, name) in enumerate(zip(run_ids, prepared.sets, names, strict=True))
    ]
    for record in records:
        write_record(layout, record)
    if sweep is not None and parent_id is not None:
        parentrun.write_record(files, _sweep_record(sweep, parent_id, records, redact))
    return records


def _parent(sweep: SweepPlan | None, redact: Redactor) -> tracking.Parent | None:
    if sweep is None:
        return None
    params = {k: redact(v) for k, v in sweep.params.items()}
    return tracking.Parent(name=redact(sweep.name), params=params)


def _sweep_record(
    sweep: SweepPlan, parent_id: str, records: list[RunRecord], redact: Redactor
) -> parentrun.SweepRecord:
    return parentrun.SweepRecord(
        parent_run_id=parent_id,
        name=redact(sweep.name),
        tracking_uri=records[0].tracking_uri,
        swept=sweep.swept,
        children=[
            parentrun.SweepChild(
                run_id=r.run_id,
                name=r.name or r.run_id,
                values={k: redact(v) for k, v in values.items()},
            )
            for r, values in zip(records, sweep.values, strict=True)
        ],
        best_metric=sweep.best_by.metric if sweep.best_by else None,
        best_mode=sweep.best_by.mode if sweep.best_by else "min",
    )


def launch_tags(prepared: Prepared, launch_id: str, files: LaunchFiles) -> dict[str, str]:
    sweep_tag = {"blocktrain.sweep_id": launch_id} if len(prepared.sets) > 1 else {}
    return {
        "blocktrain.entry": prepared.entry,
        "blocktrain.profile": prepared.profile_name,
        "blocktrain.launch_id": launch_id,
        "blocktrain.code_dir": str(files.code),
        **sweep_tag,
        **image_tags(prepared.profile),
    }


def image_tags(profile: Profile) -> dict[str, str]:
    """The runtime, the image and its digest, so a run names exactly the environment it ran in."""
    return images.tags(profile.container)


def profile_json(profile: Profile) -> dict[str, JSON]:
    value = to_jsonable(as_dict(profile))
    return value if isinstance(value, dict) else {}
