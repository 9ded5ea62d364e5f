"""The launch flow: validate, record and submit new runs of an entry function, or relaunch one.

:func:`launch` takes a :class:`LaunchRequest` and returns a :class:`LaunchResult`. Nothing is
created until the arguments and the profile are valid. Then, in order: a frozen copy of the
code, one MLflow run per argument set, the run records, and one submission (a job array when
there are several sets). A failed submission removes what was created: MLflow runs, records,
run and launch folders. Relaunches are :mod:`.relaunch`'s.

Slurm is reached only through a :class:`~blocktrain.launch.submission.Scheduler`: the cluster's,
or :class:`~blocktrain.launch.localscheduler.LocalScheduler` for ``executor`` ``local``. mlflow is
imported when the MLflow backend is opened and submitit when a job is submitted, so a dry run
loads neither. Must not print, exit or parse command lines: that is :mod:`blocktrain.cli.launch`.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from blocktrain.core.paths import LaunchFiles, Layout
from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, to_jsonable
from blocktrain.entry import resolve
from blocktrain.launch import executors, mlflowruns
from blocktrain.launch.codecopy import freeze_code, import_paths
from blocktrain.launch.entryname import entry_spec
from blocktrain.launch.image import digest
from blocktrain.launch.profile import Profile, as_dict, load_profile
from blocktrain.launch.records import RunRecord, write_record
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
from blocktrain.launch.submission import Scheduler
from blocktrain.launch.worker import load_entry
from blocktrain.track.backend import MlflowBackend, tracking_uri
from blocktrain.track.gitstate import git_state

__all__ = ["DRY_RUN_ID", "LaunchRequest", "LaunchResult", "LaunchedRun", "launch"]

DEFAULT_PROFILE = "local"


def launch(
    request: LaunchRequest,
    *,
    root: Path,
    scheduler: Scheduler | None = None,
    environ: Mapping[str, str] | None = None,
) -> LaunchResult:
    """Launch new runs in the project at ``root``, or relaunch ``request.run_id``.

    ``environ`` (default: this process's environment) names the tracking URI, the experiment
    and the secrets kept out of logged params.
    """
    layout = Layout(root)
    if request.run_id:
        return relaunch(request, request.run_id, layout, scheduler)
    prepared = prepare(request, layout)
    if request.dry_run:
        return dry_run(prepared, layout)
    chosen = scheduler or executors.scheduler_for(prepared.executor, layout)
    return submit_new(prepared, layout, chosen, os.environ if environ is None else environ)


def prepare(request: LaunchRequest, layout: Layout) -> Prepared:
    """Import the entry function, resolve every argument set, load the profile."""
    executors.checked(request.executor)
    entry = entry_spec(request.entry, request.module, layout.root)
    with importable(import_paths(layout.root)):
        func = load_entry(entry)
        sets = request.argument_sets()
        resolved = [resolve(func, s.files, s.overrides) for s in sets]
    profile_name = request.profile or DEFAULT_PROFILE
    profile = load_profile(layout.root, profile_name, request.slurm)
    return Prepared(
        entry=entry,
        profile_name=profile_name,
        profile=profile,
        sets=resolved,
        labels=[s.label for s in sets],
        name=request.name,
        executor=executors.chosen(request.executor, profile.executor),
    )


@dataclass(slots=True)
class _Created:
    """What a new launch has created so far, removed again when it fails."""

    files: LaunchFiles
    store: MlflowBackend | None = None
    run_ids: list[str] = field(default_factory=list[str])

    def remove(self, layout: Layout) -> None:
        if self.store is not None:
            mlflowruns.delete_runs(self.store, self.run_ids)
        for run_id in self.run_ids:
            shutil.rmtree(layout.run(run_id).folder, ignore_errors=True)
        shutil.rmtree(self.files.folder, ignore_errors=True)


def submit_new(
    prepared: Prepared, layout: Layout, scheduler: Scheduler, environ: Mapping[str, str]
) -> LaunchResult:
    """Create the runs and submit them; on any failure, remove what was created."""
    launch_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    created = _Created(layout.launch(launch_id))
    try:
        records = create_runs(prepared, layout, launch_id, environ, created)
        submitted = submit_runs(layout, prepared.profile, records, 0, scheduler)
    except BaseException:
        created.remove(layout)
        raise
    return LaunchResult(runs=tuple(record_jobs(layout, records, submitted, "launch")))


def create_runs(
    prepared: Prepared,
    layout: Layout,
    launch_id: str,
    environ: Mapping[str, str],
    created: _Created,
) -> list[RunRecord]:
    """The frozen code, one SCHEDULED MLflow run per argument set, and their records."""
    files = created.files
    freeze_code(layout.root, files.code)
    git = git_state(layout.root)
    diff_file = None
    if git is not None and git.dirty:
        diff_file = files.git_diff
        diff_file.write_text(git.diff)
    uri = tracking_uri(environ, layout.root)
    experiment = environ.get("MLFLOW_EXPERIMENT_NAME") or layout.root.name
    names = run_names(prepared.name, len(prepared.sets))
    created.store = mlflowruns.backend(uri, layout.root)
    created.run_ids = mlflowruns.create_runs(
        created.store,
        experiment=experiment,
        names=names,
        args=prepared.sets,
        tags=launch_tags(prepared, launch_id, files),
        git=git,
        diff_file=diff_file,
        redact=Redactor.from_environ(environ),
    )
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
        )
        for i, (run_id, args, name) in enumerate(
            zip(created.run_ids, prepared.sets, names, strict=True)
        )
    ]
    for record in records:
        write_record(layout, record)
    return records


def run_names(name: str | None, count: int) -> list[str | None]:
    """One MLflow run name per run: ``name`` itself for one run, ``name-0``, ... for several."""
    if count == 1 or not name:
        return [name] * count
    return [f"{name}-{i}" for i in range(count)]


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
    """The image and its SHA-256, so a run names exactly the environment it ran in."""
    if not profile.image:
        return {}
    return {"container.image": profile.image, "container.digest": digest(Path(profile.image))}


def profile_json(profile: Profile) -> dict[str, JSON]:
    value = to_jsonable(as_dict(profile))
    return value if isinstance(value, dict) else {}
