"""``slurm-status``: this project's runs, their Slurm jobs, attempts and latest metric.

A refresh reads the run records and each run's ``status.json``, and the state files of local
jobs (``--executor local``), then asks Slurm at most twice:
one ``squeue`` about the jobs that may still be queued (none when there is nothing to ask) and
one ``sacct`` about the shown jobs that left the queue. When accounting is off (sacct fails),
those rows show the state recorded in the run's own status.json, else UNKNOWN.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from blocktrain.core.paths import Layout, project_root
from blocktrain.errors import BlocktrainError
from blocktrain.launch import statusview
from blocktrain.launch.local import queries
from blocktrain.launch.records.store import RunRecord, all_records, find_runs
from blocktrain.launch.slurm import commands
from blocktrain.launch.slurm.commands import QueueEntry, SlurmError
from blocktrain.launch.statusview import LocalStatus, Row

DESCRIPTION = """\
Show this project's runs: Slurm job, state, attempt, elapsed time, node(s), latest metric.

  slurm-status                  runs queued, running, or ended in the last 24 h
  slurm-status --all            every recorded run
  slurm-status 3f2a9c 120       these runs (run id, a prefix of 6+ characters, or a job id)
  slurm-status --watch          redraw every 5 s until Ctrl-C

The state comes from squeue while a job is queued, then from sacct; without accounting, from
the run's own status.json (FINISHED, FAILED, KILLED), else UNKNOWN. Jobs run without Slurm
(--executor local, job ids like L7, marked "(local)") are not asked about: their supervisor's
state file says the same.
"""
DEFAULT_WATCH_S = 5.0
_CLEAR = "\033[H\033[2J"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurm-status",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "idents", nargs="*", metavar="RUN|JOB", help="run id, run id prefix or Slurm job id"
    )
    parser.add_argument("--all", action="store_true", help="every recorded run")
    parser.add_argument("--json", action="store_true", help="a JSON list of rows")
    parser.add_argument(
        "--watch",
        nargs="?",
        const=DEFAULT_WATCH_S,
        type=_positive_seconds,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C",
    )
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    layout = Layout(project_root(Path.cwd()))
    try:
        if options.watch is not None:
            return watch(layout, options)
        text, note = report(layout, options)
        sys.stdout.write(text)
        _note(note)
    except SlurmError as exc:
        return _fail(exc, 1)
    except BlocktrainError as exc:
        return _fail(exc, 2)
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(exc: BlocktrainError, code: int) -> int:
    sys.stderr.write(f"slurm-status: error: {exc}\n")
    return code


def _note(note: str | None) -> None:
    if note is not None:
        sys.stdout.flush()  # after the table, where a terminal shows it
        sys.stderr.write(f"slurm-status: note: {note}\n")


def watch(layout: Layout, options: argparse.Namespace) -> int:
    """Redraw until Ctrl-C; a Slurm error is shown in place of the table and retried."""
    clear = sys.stdout.isatty()  # escape codes would litter a file or a pipe
    try:
        while True:
            try:
                text, note = report(layout, options)
            except SlurmError as exc:
                text, note = f"slurm-status: error: {exc}\n", None
            heading = "" if options.json else f"every {options.watch:g} s, {time.strftime('%X')}\n"
            sys.stdout.write((_CLEAR if clear else "") + heading + text)
            _note(note)
            sys.stdout.flush()
            pause(options.watch)
    except KeyboardInterrupt:
        return 0


def pause(seconds: float) -> None:
    """The wait between two refreshes; its own function so that a test can interrupt it."""
    time.sleep(seconds)


def report(layout: Layout, options: argparse.Namespace) -> tuple[str, str | None]:
    """One refresh, rendered as the table or the JSON list, and a note for stderr."""
    rows, note = snapshot(layout, options.idents, everything=options.all, now=time.time())
    if options.json:
        return statusview.render_json(rows), note
    if not rows and options.all:
        return f"no runs recorded in {layout.root}\n", note
    if not rows:
        empty = (
            f"no runs queued, running or ended in the last 24 h in {layout.root}; "
            "slurm-status --all lists every run\n"
        )
        return empty, note
    return statusview.render_table(rows), note


def snapshot(
    layout: Layout, idents: Sequence[str], *, everything: bool, now: float
) -> tuple[list[Row], str | None]:
    """Rows of the chosen runs, after one squeue and at most one sacct."""
    records = select(layout, idents)
    # Local jobs answer from their state files, read once (and first: reading a job whose
    # supervisor died settles its runs); Slurm is asked about the rest.
    latest = [r.latest_job.job_id for r in records if r.latest_job is not None]
    local_jobs, _ = statusview.split_local(latest)
    local_queued, local_ended = statusview.by_state(queries.entries(layout, local_jobs))
    local = {r.run_id: read_local(layout, r.run_id) for r in records}
    _, slurm_ids = statusview.split_local(statusview.queue_ids(records, local))
    queued = {**ask_queue(slurm_ids), **local_queued}
    if not (everything or idents):
        records = statusview.recent(records, local, queued, now)
    _, slurm_ids = statusview.split_local(statusview.accounting_ids(records, queued))
    accounted, note = ask_accounting(slurm_ids)
    return statusview.build_rows(records, local, queued, {**accounted, **local_ended}), note


def select(layout: Layout, idents: Sequence[str]) -> list[RunRecord]:
    """Every record, or those matching the given run or job ids (each must match one)."""
    if not idents:
        return list(all_records(layout))
    chosen: dict[str, RunRecord] = {}
    for ident in idents:
        found = find_runs(layout, ident)
        if not found:
            raise BlocktrainError(f"no run or job matches {ident!r}; see slurm-status --all")
        chosen.update((r.run_id, r) for r in found)
    return list(chosen.values())


def read_local(layout: Layout, run_id: str) -> LocalStatus:
    """status.json and the newest ``attempt-N`` folder of one run; empty when it has no logs."""
    files = layout.log_files(run_id)
    try:
        touched = files.folder.stat().st_mtime
        attempts = files.attempt_numbers()
    except OSError:
        return LocalStatus()
    try:
        text = files.status.read_text()
    except OSError:
        text = None  # not written yet: rank 0 writes it every 30 s and at the end
    stopped = layout.run(run_id).stop_marker.exists()
    return statusview.local_status(text, max(attempts, default=None), touched, stopped=stopped)


def ask_queue(job_ids: Sequence[str]) -> dict[str, QueueEntry]:
    return statusview.by_job(commands.squeue(job_ids)) if job_ids else {}


def ask_accounting(job_ids: Sequence[str]) -> tuple[dict[str, QueueEntry], str | None]:
    """How the jobs that left the queue ended; nothing and a note when accounting is off."""
    if not job_ids:
        return {}, None
    command = ["sacct", "-X", "-P", "-n", "-o", statusview.SACCT_FORMAT]
    try:
        text = commands.run([*command, "-j", ",".join(statusview.base_ids(job_ids))])
    except SlurmError as exc:
        return {}, f"no accounting ({exc}); ended jobs show their run's own status"
    return statusview.by_job(statusview.parse_sacct(text)), None


if __name__ == "__main__":
    raise SystemExit(main())
