"""``slurm-launch``: validate, record, and submit an entry function as a Slurm job.

Nothing is created until the arguments and the profile are valid. Then, in order: a frozen
copy of the code, one MLflow run per argument set, the run records, and one submission (a job
array when there are several sets). A failed submission removes what was created.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blocktrain.core.values import JSON
from blocktrain.errors import BlocktrainError
from blocktrain.launch import sweep
from blocktrain.launch.profile import Profile, load_profile, time_minutes
from blocktrain.launch.records import (
    JobEntry,
    Layout,
    RunRecord,
    read_record,
    update_record,
    write_record,
)

DESCRIPTION = """\
Submit an entry function of this project as a Slurm job.

  slurm-launch train --args experiments/baseline.yaml
  slurm-launch train --args a.yaml --args b.yaml          # two runs, one job array
  slurm-launch train --sweep experiments/ablation.yaml    # a sweep file, one job array
  slurm-launch train --run-id 3f2a9c...                   # relaunch a run from its last checkpoint

ENTRY is a function of the project's entry module ([tool.blocktrain] entry-module in
pyproject.toml, or --module), or module:function.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurm-launch",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "entry", metavar="ENTRY", help="entry function (train, evaluate, ...) or module:function"
    )
    parser.add_argument(
        "--args",
        dest="each",
        action="append",
        type=Path,
        default=[],
        metavar="FILE.yaml",
        help="an argument set; each --args file is one run (several: one job array)",
    )
    parser.add_argument(
        "--base",
        action="append",
        type=Path,
        default=[],
        metavar="FILE.yaml",
        help="arguments merged under every run (repeatable, in order)",
    )
    parser.add_argument(
        "--sweep", type=Path, metavar="FILE.yaml", help="a sweep file listing argument sets"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an argument in every run, e.g. --set optim.lr=0.1",
    )
    parser.add_argument("--profile", default="local", help="slurm/PROFILE.yaml (default: local)")
    parser.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile value, e.g. --slurm time=02:00:00 --slurm nodes=2",
    )
    parser.add_argument("--run-id", help="relaunch this run with its recorded arguments")
    parser.add_argument("--name", help="MLflow run name (array elements get -0, -1, ...)")
    parser.add_argument(
        "--module", help="the entry module, instead of pyproject's [tool.blocktrain]"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the batch script; create and submit nothing",
    )
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    try:
        return launch(options)
    except BlocktrainError as exc:
        sys.stderr.write(f"slurm-launch: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated launch, before anything is written."""

    entry: str
    profile: Profile
    sets: list[dict[str, JSON]]
    labels: list[str]


def launch(options: argparse.Namespace) -> int:
    from blocktrain.core.paths import project_root

    layout = Layout(project_root(Path.cwd()))
    if options.run_id:
        return relaunch(options, layout)
    prepared = prepare(options, layout)
    if options.dry_run:
        return dry_run(prepared, layout)
    return submit_new(options, prepared, layout)


def prepare(options: argparse.Namespace, layout: Layout) -> Prepared:
    from blocktrain.entry import resolve
    from blocktrain.launch.codecopy import import_paths
    from blocktrain.launch.worker import load_entry

    entry = entry_spec(options.entry, options.module, layout.root)
    for path in reversed(import_paths(layout.root)):  # the project's modules, src/ layout first
        sys.path.insert(0, path)
    func = load_entry(entry)
    sets = sweep.argument_sets(
        options.base, options.each, options.sweep, sweep.dotted(options.overrides)
    )
    resolved = [resolve(func, s.files, s.overrides) for s in sets]
    profile = load_profile(layout.root, options.profile, options.slurm)
    return Prepared(entry, profile, resolved, [s.label for s in sets])


def entry_spec(name: str, module: str | None, root: Path) -> str:
    """``module:function`` for the ENTRY argument."""
    if ":" in name:
        return name
    module = module or configured_module(root)
    if not module:
        raise BlocktrainError(
            "no entry module: pass --module package.entry, or set entry-module under "
            f"[tool.blocktrain] in {root / 'pyproject.toml'}"
        )
    return f"{module}:{name.replace('-', '_')}"


def configured_module(root: Path) -> str | None:
    import tomllib

    try:
        config = tomllib.loads((root / "pyproject.toml").read_text())
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return None
    value = config.get("tool", {}).get("blocktrain", {}).get("entry-module")
    return value if isinstance(value, str) else None


def dry_run(prepared: Prepared, layout: Layout) -> int:
    import json

    from blocktrain.launch import batch

    folder = layout.launch_dir("DRY-RUN")
    plan = batch.plan(
        prepared.profile,
        job_name=prepared.entry.rpartition(":")[2],
        folder=folder / "submitit",
        project_root=layout.root,
        host_python=sys.executable,
        code_paths=[str(folder / "code" / "src"), str(folder / "code")],
        requeue_dir=folder / "requeue",
    )
    for label, values in zip(prepared.labels, prepared.sets, strict=True):
        sys.stdout.write(f"# {label}: {json.dumps(values, sort_keys=True)}\n")
    sys.stdout.write(batch.render(plan, len(prepared.sets)))
    return 0


def submit_new(options: argparse.Namespace, prepared: Prepared, layout: Layout) -> int:
    from blocktrain.core.redact import Redactor
    from blocktrain.launch import mlflowruns
    from blocktrain.launch.codecopy import freeze_code
    from blocktrain.track.backend import tracking_uri
    from blocktrain.track.gitstate import git_state

    launch_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    launch_dir = layout.launch_dir(launch_id)
    uri = tracking_uri(os.environ, layout.root)
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or layout.root.name
    count = len(prepared.sets)
    names = [
        options.name if count == 1 else (f"{options.name}-{i}" if options.name else None)
        for i in range(count)
    ]
    run_ids: list[str] = []
    store = None
    try:
        freeze_code(layout.root, launch_dir / "code")
        git = git_state(layout.root)
        diff_file = None
        if git is not None and git.dirty:
            diff_file = launch_dir / "git.diff"
            diff_file.write_text(git.diff)
        store = mlflowruns.backend(uri, layout.root)
        tags = {
            "blocktrain.entry": prepared.entry,
            "blocktrain.profile": options.profile,
            "blocktrain.launch_id": launch_id,
            "blocktrain.code_dir": str(launch_dir / "code"),
            **({"blocktrain.sweep_id": launch_id} if count > 1 else {}),
            **image_tags(prepared.profile),
        }
        run_ids = mlflowruns.create_runs(
            store,
            experiment=experiment,
            names=names,
            args=prepared.sets,
            tags=tags,
            git=git,
            diff_file=diff_file,
            redact=Redactor.from_environ(os.environ),
        )
        records = [
            RunRecord(
                run_id=run_id,
                entry=prepared.entry,
                args=args,
                profile=options.profile,
                profile_values=profile_json(prepared.profile),
                launch_id=launch_id,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                tracking_uri=uri,
                experiment=experiment,
                name=name,
                sweep_id=launch_id if count > 1 else None,
                array_index=i if count > 1 else None,
            )
            for i, (run_id, args, name) in enumerate(
                zip(run_ids, prepared.sets, names, strict=True)
            )
        ]
        for record in records:
            write_record(layout, record)
        job_ids = submit_records(layout, prepared.profile, records, attempt_base=0)
    except BaseException:
        if store is not None:
            mlflowruns.delete_runs(store, run_ids)
        for run_id in run_ids:
            shutil.rmtree(layout.run_dir(run_id), ignore_errors=True)
        shutil.rmtree(launch_dir, ignore_errors=True)
        raise
    for record, (job_id, watcher) in zip(records, job_ids, strict=True):
        entry = JobEntry(job_id=job_id, submitted=_now(), watcher_id=watcher)
        update_record(layout, record.run_id, lambda r, e=entry: r.jobs.append(e))
        sys.stdout.write(
            f"run {record.run_id}  job {job_id}  logs {layout.run_logs(record.run_id)}  "
            f"(slurm-log {record.run_id[:8]})\n"
        )
    return 0


def submit_records(
    layout: Layout, profile: Profile, records: list[RunRecord], attempt_base: int
) -> list[tuple[str, str]]:
    """Submit one task set per record (an array for several) and the watcher of their end.

    Returns (job id, watcher job id) per record.
    """
    from blocktrain.launch import batch, finalize, slurmcmd, submission
    from blocktrain.launch.codecopy import import_paths
    from blocktrain.launch.spec import JobSpec
    from blocktrain.launch.worker import Worker

    launch_dir = layout.launch_dir(records[0].launch_id)
    code_dir = launch_dir / "code"
    requeue_dir = launch_dir / "requeue"
    requeue_dir.mkdir(parents=True, exist_ok=True)
    budgets: dict[str, int | str] = {
        "timeout": profile.restarts.timeouts,
        "preemption": profile.restarts.preemptions,
        "crash": profile.restarts.crashes,
    }
    workers = [
        Worker(
            JobSpec(
                run_id=r.run_id,
                entry=r.entry,
                args=r.args,
                project_root=str(layout.root),
                code_dir=str(code_dir),
                run_dir=str(layout.run_dir(r.run_id)),
                log_dir=str(layout.logs),
                requeue_dir=str(requeue_dir),
                attempt_base=attempt_base,
                restart_signal=profile.signal_name,
                lead_s=profile.signal_lead_s,
                time_limit_s=time_minutes(profile.time) * 60,
                budgets=budgets,
                tracking_uri=r.tracking_uri,
                experiment=r.experiment,
            )
        )
        for r in records
    ]
    plan = batch.plan(
        profile,
        job_name=records[0].entry.rpartition(":")[2],
        folder=launch_dir / "submitit",
        project_root=layout.root,
        host_python=sys.executable,
        code_paths=import_paths(code_dir),
        requeue_dir=requeue_dir,
    )
    job_ids = submission.submit(plan, workers)
    try:
        watcher = finalize.sbatch_watcher(
            job_ids[0], sys.executable, layout.root, [r.run_id for r in records],
            log=launch_dir / "finalize-%j.out",
        )  # fmt: skip
    except BaseException:
        # Without its watcher a job could die unrecorded: take the job back too.
        slurmcmd.run(["scancel", *sorted({j.split("_", 1)[0] for j in job_ids})])
        raise
    return [(job_id, watcher) for job_id in job_ids]


def relaunch(options: argparse.Namespace, layout: Layout) -> int:
    from blocktrain.entry import resolve
    from blocktrain.launch import mlflowruns, slurmcmd
    from blocktrain.launch.worker import FINISHED, load_entry

    record = read_record(layout, options.run_id)
    active = [
        e for e in slurmcmd.squeue([j.job_id for j in record.jobs]) if _belongs(e.job_id, record)
    ]
    if active:
        jobs = ", ".join(f"{e.job_id} ({e.state})" for e in active)
        raise BlocktrainError(
            f"run {record.run_id} still has a job in the queue: {jobs}; stop it first"
        )
    from blocktrain.launch.codecopy import import_paths

    for path in reversed(import_paths(layout.launch_dir(record.launch_id) / "code")):
        sys.path.insert(0, path)
    func = load_entry(record.entry)
    sets = sweep.argument_sets(
        options.base, options.each, options.sweep, sweep.dotted(options.overrides)
    )
    if len(sets) > 1:
        raise BlocktrainError("--run-id relaunches one run: give at most one --args file")
    given = sets[0]
    wanted = (
        resolve(func, given.files, {**record.args, **given.overrides})
        if given.files or given.overrides
        else record.args
    )
    changed = {k: (record.args.get(k), v) for k, v in wanted.items() if record.args.get(k) != v}
    if changed:
        shown = "; ".join(
            f"{k}: recorded {old!r}, now {new!r}" for k, (old, new) in changed.items()
        )
        raise BlocktrainError(
            f"run {record.run_id} has immutable arguments ({shown}); start a new run instead"
        )
    profile = load_profile(
        layout.root,
        options.profile if options.profile != "local" else record.profile,
        options.slurm,
    )
    if options.dry_run:
        return dry_run(Prepared(record.entry, profile, [record.args], [record.run_id]), layout)
    store = mlflowruns.backend(record.tracking_uri, layout.root)
    attempts, _ = mlflowruns.last_attempt(store, record.run_id)
    (layout.run_dir(record.run_id) / FINISHED).unlink(missing_ok=True)
    (layout.run_dir(record.run_id) / "stop").unlink(missing_ok=True)
    [(job_id, watcher)] = submit_records(layout, profile, [record], attempt_base=attempts)
    entry = JobEntry(job_id=job_id, submitted=_now(), kind="relaunch", watcher_id=watcher)
    update_record(layout, record.run_id, lambda r: r.jobs.append(entry))
    sys.stdout.write(f"run {record.run_id}  job {job_id}  relaunched after attempt {attempts}\n")
    return 0


def _belongs(job_id: str, record: RunRecord) -> bool:
    return any(job_id == j.job_id for j in record.jobs)


def image_tags(profile: Profile) -> dict[str, str]:
    """The image and its SHA-256, so a run names exactly the environment it ran in."""
    if not profile.image:
        return {}
    from blocktrain.launch.image import digest

    return {"container.image": profile.image, "container.digest": digest(Path(profile.image))}


def profile_json(profile: Profile) -> dict[str, JSON]:
    from blocktrain.core.values import to_jsonable
    from blocktrain.launch.profile import as_dict

    value = to_jsonable(as_dict(profile))
    return value if isinstance(value, dict) else {}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


if __name__ == "__main__":
    raise SystemExit(main())
