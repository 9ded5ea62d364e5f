"""``slurm-log``: the captured output of a run across its attempts, or followed as it grows.

Each attempt's lines come after a header, ``==> attempt 2 (job 123, host vm, started ...) <==``,
written to stderr: stdout carries exactly the log's bytes, so it pipes cleanly into grep or
less (``2>/dev/null`` drops the headers). ``--node`` picks the ranks by the node each ran on in
each attempt (their records in the attempt's folder), one header per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from blocktrain.core.paths import Layout, LogFiles, project_root
from blocktrain.errors import BlocktrainError
from blocktrain.launch import statusview
from blocktrain.launch.local import queries
from blocktrain.launch.records.store import RunRecord, find_runs, read_record
from blocktrain.launch.slurm import commands

DESCRIPTION = """\
Print the log of a run: every attempt in order, rank 0's stdout unless told otherwise.

  slurm-log 3f2a9c              a run id, or a prefix of 6+ characters
  slurm-log 120_3 --err         element 3 of array job 120, its stderr
  slurm-log 3f2a9c --follow     keep printing until the run ends (or Ctrl-C); a queued
                                job is waited for
  slurm-log 3f2a9c --node node2 every rank that ran on node2, attempt by attempt

Attempt headers go to stderr; stdout is the log itself.
"""
POLL_S = 0.5
QUEUE_CHECK_S = 10.0  # while waiting for a queued job to start, ask squeue this often
_CHUNK = 1 << 20  # logs can be large: copy them piecewise
_FACTS = (("job", "job_id"), ("host", "host"), ("started", "started"))  # attempt.json keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurm-log",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ident", metavar="RUN|JOB", help="run id, run id prefix or Slurm job id")
    parser.add_argument("--err", action="store_true", help="stderr instead of stdout")
    parser.add_argument(
        "--follow", action="store_true", help="print new lines as they come until the run ends"
    )
    parser.add_argument(
        "--rank", type=int, metavar="N", help="task rank (default 0, or every rank of --node)"
    )
    parser.add_argument(
        "--node", metavar="NODE", help="the ranks that ran on this node (each attempt's own)"
    )
    parser.add_argument("--attempt", type=int, metavar="N", help="only this attempt")
    return parser


@dataclass(frozen=True, slots=True)
class Logs:
    """Where one rank's stream of one run lies."""

    files: LogFiles
    rank: int
    stream: str
    """``out`` or ``err``."""

    @property
    def file_name(self) -> str:
        return self.path(0).name

    def attempts(self) -> list[int]:
        return self.files.attempt_numbers()

    def path(self, attempt: int) -> Path:
        return self.files.rank_log(attempt, self.rank, self.stream)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.follow and options.node is not None:
        parser.error("--follow follows one rank: name it with --rank, without --node")
    layout = Layout(project_root(Path.cwd()))
    try:
        record = resolve(layout, options.ident)
        logs = Logs(layout.log_files(record.run_id), options.rank or 0, _stream(options))
        attempts = chosen_attempts(layout, record, logs, options)
        if options.follow:
            return follow(layout, record, logs, attempts[0], only=options.attempt is not None)
        if options.node is not None:
            print_node(logs, attempts, options.node, options.rank)
            return 0
        for attempt in attempts:
            header(logs, attempt)
            pump(logs.path(attempt), 0)
    except BlocktrainError as exc:
        sys.stderr.write(f"slurm-log: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 0  # the way to stop --follow
    except BrokenPipeError:
        _silence_stdout()  # the reader (head, less) has had enough
    return 0


def _stream(options: argparse.Namespace) -> str:
    return "err" if options.err else "out"


def resolve(layout: Layout, ident: str) -> RunRecord:
    """The one run a run id, prefix or job id names; an array's job id names several."""
    found = find_runs(layout, ident)
    if not found:
        raise BlocktrainError(f"no run or job matches {ident!r}; see slurm-status --all")
    if len(found) > 1:
        listed = ", ".join(f"{r.run_id[:8]} ({_job(r)})" for r in found)
        raise BlocktrainError(f"{ident!r} matches {len(found)} runs: {listed}; name one of them")
    return found[0]


def _job(record: RunRecord) -> str:
    return f"job {record.latest_job.job_id}" if record.latest_job is not None else "not submitted"


def chosen_attempts(
    layout: Layout, record: RunRecord, logs: Logs, options: argparse.Namespace
) -> list[int]:
    """The attempts to print, oldest first; an error when there is nothing to print."""
    attempts = logs.attempts() or (wait_for_start(layout, record, logs) if options.follow else [])
    if not attempts:
        raise BlocktrainError(no_logs_message(layout, record, queue_state(layout, record)))
    if options.attempt is None:
        return attempts
    if options.attempt not in attempts:
        have = ", ".join(map(str, attempts))
        raise BlocktrainError(
            f"run {record.run_id} has no attempt {options.attempt}; it has {have}"
        )
    return [options.attempt]


def wait_for_start(layout: Layout, record: RunRecord, logs: Logs) -> list[int]:
    """With --follow, wait for the first attempt while the run's job stays queued."""
    state = queue_state(layout, record)
    if state is not None:
        sys.stderr.write(f"slurm-log: {_job(record)} is {state}; waiting for it to start\n")
    while state is not None:
        deadline = time.monotonic() + QUEUE_CHECK_S
        while time.monotonic() < deadline:
            if attempts := logs.attempts():
                return attempts
            time.sleep(POLL_S)
        state = queue_state(layout, record)
    return logs.attempts()  # it may have started and ended between two looks


def no_logs_message(layout: Layout, record: RunRecord, state: str | None) -> str:
    """Why a run has no logs: still queued, or it ended before the entry function started."""
    if record.latest_job is None:
        return f"run {record.run_id} has no logs yet: it has not been submitted"
    job_id = record.latest_job.job_id
    if state is not None:
        return f"run {record.run_id} has no logs yet: job {job_id} is {state}"
    submitit = layout.launch(record.launch_id).submitit
    return (
        f"run {record.run_id} has no logs: job {job_id} is not queued; it may have "
        f"failed before the entry function started (see {submitit})"
    )


def queue_state(layout: Layout, record: RunRecord) -> str | None:
    """The state of the run's latest job in squeue; None when it is not queued or Slurm
    cannot be asked (the messages then point at the files, which is right either way)."""
    if record.latest_job is None:
        return None
    job_id = record.latest_job.job_id
    if record.latest_job.executor == "local":
        queue = queries.queued(layout, [job_id])
        return next((e.state for e in queue if e.job_id == job_id), None)
    try:
        return next((e.state for e in commands.squeue([job_id]) if e.job_id == job_id), None)
    except commands.SlurmError:
        return None


def print_node(logs: Logs, attempts: list[int], node: str, rank: int | None) -> None:
    """Each attempt's logs of the ranks that ran on ``node`` (only ``rank``, when given)."""
    seen: set[str] = set()
    printed = False
    for attempt in attempts:
        placed = rank_nodes(logs.files, attempt)
        seen.update(placed.values())
        for found in ranks_on(placed, node, rank):
            chosen = Logs(logs.files, found, logs.stream)
            header(chosen, attempt, where=f"rank {found} on {node}")
            pump(chosen.path(attempt), 0)
            printed = True
    if not printed:
        which = "no rank" if rank is None else f"rank {rank} never"
        nodes = ", ".join(sorted(seen)) or "none recorded"
        raise BlocktrainError(f"{which} ran on node {node!r}; the run's nodes: {nodes}")


def rank_nodes(files: LogFiles, attempt: int) -> dict[int, str]:
    """``{rank: node}`` of one attempt, from the records each rank left (torn ones skipped)."""
    placed: dict[int, str] = {}
    for path in files.rank_records(attempt):
        try:
            raw: object = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        facts = cast("dict[str, object]", raw) if isinstance(raw, dict) else {}
        rank, node = facts.get("rank"), facts.get("node")
        if isinstance(rank, int) and isinstance(node, str):
            placed[rank] = node
    return placed


def ranks_on(placed: dict[int, str], node: str, rank: int | None) -> list[int]:
    """The ranks placed on ``node``, in order; only ``rank`` when given."""
    return sorted(r for r, where in placed.items() if where == node and rank in (None, r))


def header(logs: Logs, attempt: int, where: str | None = None) -> None:
    """``==> attempt N (job J, host H, started T) <==`` on stderr, after stdout's pending bytes;
    with ``where``, ``==> attempt N, rank R on NODE (job J, started T) <==``."""
    facts = attempt_facts(logs.files.attempt_record(attempt), host=where is None)
    missing = "" if logs.path(attempt).exists() else f"no {logs.file_name}"
    parts = [part for part in (facts, missing) if part]
    described = f" ({', '.join(parts)})" if parts else ""
    placed = f", {where}" if where else ""
    sys.stdout.flush()
    sys.stderr.write(f"==> attempt {attempt}{placed}{described} <==\n")
    sys.stderr.flush()


def attempt_facts(path: Path, *, host: bool = True) -> str:
    """``job 123, host vm, started ...`` from attempt.json (written by rank 0), else empty;
    the host (rank 0's) only with ``host``."""
    try:
        raw: object = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    facts = cast("dict[str, object]", raw) if isinstance(raw, dict) else {}
    shown = [(label, facts.get(key)) for label, key in _FACTS if host or label != "host"]
    return ", ".join(f"{label} {value}" for label, value in shown if value not in (None, ""))


def pump(path: Path, offset: int) -> int:
    """Copy the bytes of ``path`` from ``offset`` to stdout; return the new offset."""
    out = sys.stdout.buffer
    try:
        with path.open("rb") as source:
            source.seek(offset)
            while chunk := source.read(_CHUNK):
                out.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        return offset
    out.flush()
    return offset


def follow(layout: Layout, record: RunRecord, logs: Logs, attempt: int, *, only: bool) -> int:
    """Print the attempt's file as it grows, then each later attempt's, until the run ends.

    With ``only`` (``--attempt N``) it stops when the next attempt starts.
    """
    cursor = Cursor(logs, attempt)
    while True:
        later = next((a for a in logs.attempts() if a > cursor.attempt), None)
        ended = later is None and run_ended(layout, record.run_id, logs.files)
        cursor.pump()  # after looking: whatever was written before the end is printed
        if ended:
            time.sleep(POLL_S)  # other ranks may finish writing just after rank 0 records the end
            cursor.close()
            return 0
        if later is None:
            time.sleep(POLL_S)
            continue
        cursor.close()
        if only:
            return 0
        cursor = Cursor(logs, later)


@dataclass(slots=True)
class Cursor:
    """How far --follow has printed one attempt's file.

    The header waits for the file to appear, so that it can name the job and host that
    rank 0 records just before the file is opened.
    """

    logs: Logs
    attempt: int
    offset: int = 0
    announced: bool = False

    def pump(self) -> None:
        path = self.logs.path(self.attempt)
        if not self.announced and path.exists():
            header(self.logs, self.attempt)
            self.announced = True
        if self.announced:
            self.offset = pump(path, self.offset)

    def close(self) -> None:
        """Print the rest, and the header even if the attempt left no file."""
        self.pump()
        if not self.announced:
            header(self.logs, self.attempt)
            self.announced = True


def run_ended(layout: Layout, run_id: str, files: LogFiles) -> bool:
    """status.json says FINISHED, FAILED or KILLED, for the latest job of the run."""
    try:
        text = files.status.read_text()
    except OSError:
        return False
    record = read_record(layout, run_id)  # a relaunch adds a job: the old status is stale then
    return statusview.settled(record, statusview.local_status(text, None, None))


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again


if __name__ == "__main__":
    raise SystemExit(main())
