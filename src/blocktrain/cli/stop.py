"""``slurm-stop`` (graceful) and ``slurm-cancel`` (immediate) for this project's runs.

A run id (or a unique prefix) means every live job of the run: a run that was relaunched while
an old job still ran has them all stopped or cancelled. A job id means that job alone; the run
is marked KILLED only when no other job of it is live.

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
from dataclasses import dataclass
from pathlib import Path

from blocktrain.core.paths import Layout, project_root
from blocktrain.errors import BlocktrainError
from blocktrain.launch.local import queries
from blocktrain.launch.records import tracking
from blocktrain.launch.records.store import RunRecord, find_runs, job_matches
from blocktrain.launch.slurm import commands


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "ids", nargs="+", metavar="RUN|JOB", help="run id (or 6+ character prefix) or Slurm job id"
    )
    return parser


@dataclass(frozen=True, slots=True)
class Target:
    """A run, and the jobs of it that a command acts on: all of them for a run id, the one
    named for a job id."""

    record: RunRecord
    jobs: tuple[str, ...]


def _targets(layout: Layout, ids: Sequence[str]) -> list[Target]:
    targets: list[Target] = []
    for ident in ids:
        found = find_runs(layout, ident)
        if not found:
            raise BlocktrainError(f"no run or job matches {ident!r}; see slurm-status --all")
        for record in found:
            named = tuple(j.job_id for j in record.jobs if job_matches(j.job_id, ident))
            jobs = (
                named if named and record.run_id != ident else tuple(j.job_id for j in record.jobs)
            )
            targets.append(Target(record, jobs))
    return _merged(targets)


def _merged(targets: Sequence[Target]) -> list[Target]:
    """One target per run, with the jobs every mention of it named."""
    merged: dict[str, Target] = {}
    for target in targets:
        seen = merged.get(target.record.run_id)
        jobs = target.jobs if seen is None else (*seen.jobs, *target.jobs)
        merged[target.record.run_id] = Target(target.record, tuple(dict.fromkeys(jobs)))
    return list(merged.values())


def _live(layout: Layout, records: Sequence[RunRecord]) -> dict[str, str]:
    """Job id -> state, for every job of the records still queued or running (Slurm is asked
    only about its own jobs; a local job's state file answers for it)."""
    jobs = [j for r in records for j in r.jobs]
    on_slurm = [j.job_id for j in jobs if j.executor != "local"]
    local = [j.job_id for j in jobs if j.executor == "local"]
    queued = commands.squeue(on_slurm) if on_slurm else []
    queued += queries.queued(layout, local) if local else []
    wanted = {j.job_id for j in jobs}
    return {e.job_id: e.state for e in queued if e.job_id in wanted}


def _is_local(record: RunRecord, job: str) -> bool:
    return any(j.job_id == job and j.executor == "local" for j in record.jobs)


def stop(layout: Layout, targets: Sequence[Target]) -> list[str]:
    live = _live(layout, [t.record for t in targets])
    lines: list[str] = []
    for target in targets:
        record = target.record
        jobs = [j for j in target.jobs if j in live]
        if not jobs:
            lines.append(f"run {record.run_id}: no job in the queue; nothing to stop")
            continue
        running = [j for j in jobs if live[j] != "PENDING"]
        if running:
            layout.run(record.run_id).stop_marker.touch()
        signal = str(record.profile_values.get("signal", "USR2")).removeprefix("SIG")
        for job in jobs:
            if live[job] == "PENDING":
                _cancel_job(layout, record, job)
                lines.append(f"run {record.run_id}: job {job} was pending; cancelled")
            elif _is_local(record, job):
                queries.signal_tasks(layout, job, signal)
            else:
                commands.run(["scancel", f"--signal={signal}", job])
        if running:
            lines.append(f"run {record.run_id}: job {', '.join(running)} checkpoints and stops; "
                         f"resume with slurm-launch --run-id {record.run_id}")  # fmt: skip
        elif not _others_live(record, jobs, live):
            _mark_killed(layout, record)
    return lines


def cancel(layout: Layout, targets: Sequence[Target]) -> list[str]:
    live = _live(layout, [t.record for t in targets])
    lines: list[str] = []
    for target in targets:
        record = target.record
        jobs = [j for j in target.jobs if j in live]
        for job in jobs:
            _cancel_job(layout, record, job)
        others = _others_live(record, jobs, live)
        if not others:
            _mark_killed(layout, record)
        done = f"job {', '.join(jobs)} cancelled" if jobs else "no job in the queue"
        state = f"; job {', '.join(others)} of the run still runs" if others else "; run KILLED"
        lines.append(f"run {record.run_id}: {done}{state}")
    return lines


def _others_live(record: RunRecord, acted: Sequence[str], live: dict[str, str]) -> list[str]:
    """The run's live jobs that the command did not act on (a job id names only its job)."""
    return [j.job_id for j in record.jobs if j.job_id in live and j.job_id not in acted]


def _cancel_job(layout: Layout, record: RunRecord, job: str) -> None:
    """``scancel``; for a local job, its supervisor ends the tasks (waited for, so that the
    run is marked KILLED after its tasks have written their last status)."""
    if _is_local(record, job):
        queries.cancel(layout, job)
    else:
        commands.run(["scancel", job])


def _mark_killed(layout: Layout, record: RunRecord) -> None:
    """KILLED in MLflow and status.json, unless the run had already ended otherwise. A Slurm
    job's tasks may still write their last status after ``scancel``; its watcher job settles
    the run again once the job has left the queue."""
    from blocktrain.launch.slurm import finalize  # its imports only when a run is marked

    store = tracking.backend(record.tracking_uri, layout.root)
    finalize.settle(layout, record, store, lambda _: "CANCELLED")


def _main(prog: str, description: str, action: str, argv: Sequence[str] | None) -> int:
    options = _parser(prog, description).parse_args(argv)
    try:
        layout = Layout(project_root(Path.cwd()))
        targets = _targets(layout, options.ids)
        lines = stop(layout, targets) if action == "stop" else cancel(layout, targets)
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
