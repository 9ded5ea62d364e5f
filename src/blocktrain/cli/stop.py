"""``slurm-stop`` (graceful) and ``slurm-cancel`` (immediate) for this project's runs.

``slurm-stop RUN|JOB`` leaves a stop marker in the run's folder and sends the profile's restart
signal to the tasks: they checkpoint at the next step boundary and end without a requeue; the
run ends KILLED and ``slurm-launch --run-id`` resumes it later. A job still pending is simply
cancelled. ``slurm-cancel RUN|JOB`` cancels at once (no checkpoint) and marks the run KILLED.
Both work the same on jobs run without Slurm (``--executor local``), through their supervisor.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from blocktrain.core.paths import Layout, project_root
from blocktrain.errors import BlocktrainError
from blocktrain.launch.local import queries
from blocktrain.launch.records import tracking
from blocktrain.launch.records.store import RunRecord, find_runs
from blocktrain.launch.slurm import commands


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "ids", nargs="+", metavar="RUN|JOB", help="run id (or 6+ character prefix) or Slurm job id"
    )
    return parser


def _runs(layout: Layout, ids: Sequence[str]) -> list[RunRecord]:
    runs: list[RunRecord] = []
    for ident in ids:
        found = find_runs(layout, ident)
        if not found:
            raise BlocktrainError(f"no run or job matches {ident!r}; see slurm-status --all")
        runs += [r for r in found if r.run_id not in {x.run_id for x in runs}]
    return runs


def _active(layout: Layout, records: Sequence[RunRecord]) -> dict[str, str]:
    """Job id -> state, for the records' latest jobs that are still queued or running (Slurm
    is asked only about its own jobs; a local job's state file answers for it)."""
    latest = [r.latest_job for r in records if r.latest_job is not None]
    on_slurm = [j.job_id for j in latest if j.executor != "local"]
    local = [j.job_id for j in latest if j.executor == "local"]
    queued = commands.squeue(on_slurm) if on_slurm else []
    queued += queries.queued(layout, local) if local else []
    wanted = {j.job_id for j in latest}
    return {e.job_id: e.state for e in queued if e.job_id in wanted}


def _is_local(record: RunRecord) -> bool:
    return record.executor == "local"


def stop(layout: Layout, records: Sequence[RunRecord]) -> list[str]:
    active = _active(layout, records)
    lines: list[str] = []
    for record in records:
        job = record.latest_job.job_id if record.latest_job else None
        if job is None or job not in active:
            lines.append(f"run {record.run_id}: no job in the queue; nothing to stop")
            continue
        if active[job] == "PENDING":
            _cancel_job(layout, record, job)
            _mark_killed(layout, record)
            lines.append(f"run {record.run_id}: job {job} was pending; cancelled")
            continue
        layout.run(record.run_id).stop_marker.touch()
        signal = str(record.profile_values.get("signal", "USR2")).removeprefix("SIG")
        if _is_local(record):
            queries.signal_tasks(layout, job, signal)
        else:
            commands.run(["scancel", f"--signal={signal}", job])
        lines.append(f"run {record.run_id}: job {job} checkpoints and stops; resume with "
                     f"slurm-launch --run-id {record.run_id}")  # fmt: skip
    return lines


def cancel(layout: Layout, records: Sequence[RunRecord]) -> list[str]:
    active = _active(layout, records)
    lines: list[str] = []
    for record in records:
        job = record.latest_job.job_id if record.latest_job else None
        if job is not None and job in active:
            _cancel_job(layout, record, job)
        _mark_killed(layout, record)
        lines.append(
            f"run {record.run_id}: "
            + (f"job {job} cancelled" if job in active else "marked KILLED")
        )
    return lines


def _cancel_job(layout: Layout, record: RunRecord, job: str) -> None:
    """``scancel``; for a local job, its supervisor ends the tasks (waited for, so that the
    run is marked KILLED after its tasks have written their last status)."""
    if _is_local(record):
        queries.cancel(layout, job)
    else:
        commands.run(["scancel", job])


def _mark_killed(layout: Layout, record: RunRecord) -> None:
    store = tracking.backend(record.tracking_uri, layout.root)
    if str(store.get_run(record.run_id).info.status) in ("RUNNING", "SCHEDULED"):
        store.set_status(record.run_id, "KILLED", None)


def _main(prog: str, description: str, action: str, argv: Sequence[str] | None) -> int:
    options = _parser(prog, description).parse_args(argv)
    try:
        layout = Layout(project_root(Path.cwd()))
        records = _runs(layout, options.ids)
        lines = stop(layout, records) if action == "stop" else cancel(layout, records)
    except BlocktrainError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def stop_main(argv: Sequence[str] | None = None) -> int:
    return _main("slurm-stop", "Checkpoint and stop runs without requeueing them.", "stop", argv)


def cancel_main(argv: Sequence[str] | None = None) -> int:
    return _main(
        "slurm-cancel", "Cancel runs' jobs at once and mark the runs KILLED.", "cancel", argv
    )
