"""What slurm-status shows: run records, the queue, accounting and local status joined into rows.

Pure functions only. The CLI reads the files and runs ``squeue``/``sacct``; this module parses
their output, decides which runs to show and which jobs to ask about, and renders the result.

Where a row's state comes from, first match wins:

1. ``squeue`` (the latest job of the run is queued: PENDING, RUNNING, ...);
2. ``sacct`` (it has left the queue: COMPLETED, FAILED, CANCELLED, TIMEOUT, ...);
3. the run's ``status.json`` written by the tracker (FINISHED, FAILED, KILLED, ...), if it was
   written after the latest job was submitted, so a relaunched run never shows the old state;
4. ``UNKNOWN``.

A job run without Slurm (``--executor local``, job ids such as ``L7``) is not asked about in
``squeue``/``sacct``: its supervisor's state file takes their place (see :mod:`..local.jobstate`),
except that once it has ended, the run's own status.json (FINISHED, KILLED, ...) comes first.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from blocktrain.launch.local.jobstate import ACTIVE, is_local
from blocktrain.launch.records.store import RunRecord
from blocktrain.launch.slurm.commands import QueueEntry, expand_array_id

TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
"""Final states of ``status.json``; SCHEDULED (requeued) and RUNNING are not."""
RECENT_S = 24 * 3600.0
"""Without ``--all``, runs that left the queue show for this long after their last activity."""
SACCT_FORMAT = "JobID,State,Elapsed,NodeList"
_NO_NODE = ("", "None assigned", "(null)")
_STAMP = "%Y-%m-%dT%H:%M:%S%z"  # how records and attempt.json write times


def parse_sacct(text: str) -> list[QueueEntry]:
    """Lines of ``sacct -X -P -n -o JobID,State,Elapsed,NodeList``, in ``squeue``'s shape.

    Pending arrays (``120_[0-3]``) are expanded; ``CANCELLED by 1000`` becomes ``CANCELLED``.
    """
    entries: list[QueueEntry] = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 4 or not fields[0]:
            continue
        job_id, state, elapsed, nodes = fields[:4]
        state = state.split(" ", 1)[0]
        nodes = "" if nodes in _NO_NODE else nodes
        entries.extend(QueueEntry(one, state, elapsed, nodes) for one in expand_array_id(job_id))
    return entries


def by_job(entries: Iterable[QueueEntry]) -> dict[str, QueueEntry]:
    """Entries keyed by job id; a later line wins (sacct lists a requeued job's latest last)."""
    return {entry.job_id: entry for entry in entries}


def split_local(job_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(local job ids, Slurm job ids): the state files answer for the first, Slurm for the rest."""
    ids = list(job_ids)
    return [j for j in ids if is_local(j)], [j for j in ids if not is_local(j)]


def by_state(entries: Iterable[QueueEntry]) -> tuple[dict[str, QueueEntry], dict[str, QueueEntry]]:
    """Local jobs' entries as (queued, accounted): what squeue and sacct would have said."""
    listed = list(entries)
    return (
        by_job(e for e in listed if e.state in ACTIVE),
        by_job(e for e in listed if e.state not in ACTIVE),
    )


def base_ids(job_ids: Iterable[str]) -> list[str]:
    """Array job ids to ask Slurm about: ``120_3`` becomes ``120``, which lists every element."""
    return sorted({job_id.split("_", 1)[0] for job_id in job_ids}, key=_numeric)


def _numeric(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalStatus:
    """What a run's own files say, without asking Slurm."""

    status: str | None = None
    """``status`` of status.json: RUNNING, SCHEDULED, FINISHED, FAILED or KILLED."""
    attempt: int | None = None
    """The newest attempt: of status.json or of the newest ``attempt-N`` folder."""
    metrics: dict[str, float] = field(default_factory=dict[str, float])
    updated: float | None = None
    """When status.json was written (epoch seconds)."""
    touched: float | None = None
    """When the run's log folder last changed (an attempt started, status.json replaced)."""
    reason: str | None = None
    """``reason`` of status.json: why the attempt failed, in one line."""
    stopped: bool = False
    """``slurm-stop`` asked the run to stop (its stop marker is there until a relaunch)."""


def local_status(
    status_text: str | None,
    newest_attempt: int | None,
    touched: float | None,
    *,
    stopped: bool = False,
) -> LocalStatus:
    """A run's :class:`LocalStatus` from status.json's text (None: absent) and its folders."""
    raw = _json_object(status_text)
    attempt = _int(raw.get("attempt"))
    attempts = [a for a in (attempt, newest_attempt) if a is not None]
    return LocalStatus(
        status=_str(raw.get("status")),
        attempt=max(attempts) if attempts else None,
        metrics=_floats(_mapping(raw.get("metrics"))),
        updated=_float(raw.get("updated")),
        touched=touched,
        reason=_str(raw.get("reason")),
        stopped=stopped,
    )


def _json_object(text: str | None) -> dict[str, object]:
    try:
        value: object = json.loads(text) if text else None
    except ValueError:  # a torn or foreign file: the run shows without local facts
        value = None
    return _mapping(value)


def _mapping(value: object) -> dict[str, object]:
    """A JSON object (its keys are strings), else empty."""
    return cast("dict[str, object]", value) if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _floats(raw: dict[str, object]) -> dict[str, float]:
    values = {k: _float(v) for k, v in raw.items()}
    return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}


def epoch(stamp: str | None) -> float | None:
    """``2026-01-31T12:00:00+0100`` (records, attempt.json) as epoch seconds."""
    try:
        return datetime.strptime(stamp or "", _STAMP).timestamp()
    except ValueError:
        return None


def submitted_at(record: RunRecord) -> float | None:
    job = record.latest_job
    return epoch(job.submitted) if job is not None else None


def current_status(record: RunRecord, local: LocalStatus) -> str | None:
    """status.json's state if it belongs to the latest job (written after its submission)."""
    submitted = submitted_at(record)
    if local.status is None or (submitted is not None and (local.updated or 0.0) < submitted):
        return None
    return local.status


def settled(record: RunRecord, local: LocalStatus) -> bool:
    """The run's latest job has ended by its own account, so it cannot be in the queue."""
    return current_status(record, local) in TERMINAL


def last_activity(record: RunRecord, local: LocalStatus) -> float:
    """The latest of: creation, submission of its latest job, status.json, its log folder."""
    stamps = (epoch(record.created), submitted_at(record), local.updated, local.touched)
    times = [t for t in stamps if t is not None]
    return max(times, default=0.0)


def queue_ids(records: Iterable[RunRecord], local: Mapping[str, LocalStatus]) -> list[str]:
    """The latest jobs that may still be queued: one ``squeue -j`` asks about all of them."""
    return [
        r.latest_job.job_id
        for r in records
        if r.latest_job is not None and not settled(r, local.get(r.run_id, LocalStatus()))
    ]


def recent(
    records: Iterable[RunRecord],
    local: Mapping[str, LocalStatus],
    queued: Mapping[str, QueueEntry],
    now: float,
) -> list[RunRecord]:
    """The default selection: runs still queued, or active in the last :data:`RECENT_S`."""
    return [
        r
        for r in records
        if (r.latest_job is not None and r.latest_job.job_id in queued)
        or now - last_activity(r, local.get(r.run_id, LocalStatus())) <= RECENT_S
    ]


def accounting_ids(records: Iterable[RunRecord], queued: Mapping[str, QueueEntry]) -> list[str]:
    """The latest jobs that left the queue: one ``sacct -j`` tells how they ended."""
    return [
        r.latest_job.job_id
        for r in records
        if r.latest_job is not None and r.latest_job.job_id not in queued
    ]


def ordered(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Newest launch first; the elements of one array in index order."""
    by_index = sorted(records, key=lambda r: r.array_index or 0)
    return sorted(by_index, key=lambda r: r.launch_id, reverse=True)


def choose_metric(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """The metric a row shows: the first whose name contains ``val`` (validation scores say
    most about a run), else the newest name logged (status.json keeps first-logged order).
    ``attempt`` is skipped: it has its own column."""
    names = [name for name in metrics if name != "attempt"]
    if not names:
        return None
    chosen = next((name for name in names if "val" in name.lower()), names[-1])
    return chosen, metrics[chosen]


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    run_id: str
    name: str | None
    """The MLflow run name (``train-baseline``); None for runs of older launches."""
    job_id: str | None
    array_index: int | None
    state: str
    attempt: int | None
    elapsed: str | None
    nodes: str | None
    metric: str | None
    """``name=value`` of :func:`choose_metric`."""
    metrics: dict[str, float]
    reason: str | None = None
    """Why the run's latest job failed, from its status.json (see :class:`LocalStatus`)."""
    executor: str | None = None
    """Where the latest job runs: ``slurm``, or ``local`` (marked in the table's JOB cell)."""
    parent_run_id: str | None = None
    """The sweep's parent run, for a run of a launch of several."""
    run_state: str | None = None
    """The run's own state beside Slurm's (``STATE``): RUNNING, SCHEDULED (requeued), FINISHED,
    STOPPED (by ``slurm-stop``: resumable), KILLED, FAILED; None before its first status."""
    resume: str | None = None
    """The command that resumes the run, for a run that ended without finishing."""

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def build_row(
    record: RunRecord,
    local: LocalStatus,
    queued: Mapping[str, QueueEntry],
    accounted: Mapping[str, QueueEntry],
) -> Row:
    """One run's row; see the module docstring for where its state comes from."""
    job_id = record.latest_job.job_id if record.latest_job is not None else None
    slurm = (queued.get(job_id) or accounted.get(job_id)) if job_id is not None else None
    state = slurm.state if slurm is not None else current_status(record, local) or "UNKNOWN"
    if slurm is not None and record.executor == "local" and settled(record, local):
        state = current_status(record, local) or state  # FINISHED says more than COMPLETED
    metric = choose_metric(local.metrics)
    own = run_state(record, local)
    return Row(
        run_id=record.run_id,
        name=record.name,
        job_id=job_id,
        array_index=record.array_index,
        state=state,
        attempt=local.attempt,
        elapsed=(slurm.elapsed or None) if slurm is not None else None,
        nodes=(slurm.nodes or None) if slurm is not None else None,
        metric=f"{metric[0]}={metric[1]:.4g}" if metric is not None else None,
        metrics=dict(local.metrics),
        reason=local.reason if current_status(record, local) is not None else None,
        executor=record.executor,
        parent_run_id=record.parent_run_id,
        run_state=own,
        resume=resume_command(record) if own in RESUMABLE else None,
    )


RESUMABLE = frozenset({"STOPPED", "KILLED", "FAILED"})
"""Run states that ``slurm-launch --run-id`` resumes from the newest checkpoint."""


def run_state(record: RunRecord, local: LocalStatus) -> str | None:
    """The run's own state: status.json's, where a KILLED run that ``slurm-stop`` asked to stop
    is STOPPED, so that a stop (checkpointed, resumable) reads apart from a cancel."""
    status = current_status(record, local)
    return "STOPPED" if status == "KILLED" and local.stopped else status


def resume_command(record: RunRecord) -> str:
    function = record.entry.rpartition(":")[2] or record.entry
    return f"slurm-launch {function} --run-id {record.run_id}"


def build_rows(
    records: Iterable[RunRecord],
    local: Mapping[str, LocalStatus],
    queued: Mapping[str, QueueEntry],
    accounted: Mapping[str, QueueEntry],
) -> list[Row]:
    return [
        build_row(r, local.get(r.run_id, LocalStatus()), queued, accounted)
        for r in ordered(records)
    ]


HEADERS = ("RUN", "NAME", "JOB", "STATE", "STATUS", "ATTEMPT", "ELAPSED", "NODES", "METRIC")
"""STATE is Slurm's (or the local supervisor's), STATUS the run's own (:func:`run_state`)."""


def cells(row: Row) -> tuple[str, ...]:
    """A row as table cells; the run id is cut to 8 characters, enough to pass to slurm-log."""
    job = f"{row.job_id} (local)" if row.job_id and row.executor == "local" else row.job_id
    values = (
        row.run_id[:8], row.name, job, row.state, row.run_state,
        None if row.attempt is None else str(row.attempt), row.elapsed, row.nodes, row.metric,
    )  # fmt: skip
    return tuple(value or "-" for value in values)


def render_table(rows: Sequence[Row]) -> str:
    """Fixed columns, each as wide as its widest cell, two spaces apart; then the reason of
    each failed row, too long for a column."""
    lines = [HEADERS, *(cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    text = (
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
    reasons = [f"{row.run_id[:8]}: {note}" for row in rows for note in _notes(row)]
    return "\n".join([*text, *reasons]) + "\n"


def _notes(row: Row) -> list[str]:
    """What a row's cells cannot hold: why it failed, and how to resume it."""
    notes = [row.reason] if row.reason else []
    if row.run_state == "STOPPED":
        notes.append(f"stopped by slurm-stop at its last checkpoint; resume: {row.resume}")
    elif row.resume is not None:
        notes.append(f"resume from its newest checkpoint: {row.resume}")
    return notes


def render_json(rows: Sequence[Row]) -> str:
    return json.dumps([row.to_dict() for row in rows], indent=2) + "\n"
