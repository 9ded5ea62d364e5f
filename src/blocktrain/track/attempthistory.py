"""A run's attempts on disk: each attempt's ``attempt.json``, completed when it ends, and the
run's ``attempts.json``/``attempts.csv`` rebuilt from them (:mod:`.attempts` makes the rows).

Rank 0 writes them: :func:`begin` when an attempt starts (completing a predecessor that never
reported, dead by SIGKILL or with its node), :func:`end` when it ends; the finalizer of a job
killed outright completes its last attempt with Slurm's word for it (:func:`close_unreported`).
The files live in the run's log folder on the shared file system, so a new attempt on another
node finds its predecessors' records.

Must not: talk to MLflow (callers upload :func:`write_tables`' folder), or fail the job over
a record: a torn or foreign file is skipped.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from blocktrain.core.atomic import write_text_atomic
from blocktrain.core.paths import LogFiles
from blocktrain.core.values import JSON
from blocktrain.track import attempts

STAMP = "%Y-%m-%dT%H:%M:%S%z"
"""How attempt records write times (slurm-log and slurm-status read them so)."""
TABLE_JSON = "attempts.json"
TABLE_CSV = "attempts.csv"


@dataclass(frozen=True, kw_only=True, slots=True)
class Begun:
    """What starting an attempt found out about the attempt before it."""

    previous: int | None = None
    """The previous attempt's number (None for a run's first)."""
    requeues: dict[str, float] = field(default_factory=dict[str, float])
    """``requeues.<cause>`` to log at the previous attempt's step: it was requeued."""


def read(logs: LogFiles, number: int) -> dict[str, JSON] | None:
    try:
        value = json.loads(logs.attempt_record(number).read_text())
    except (OSError, ValueError):
        return None
    return cast("dict[str, JSON]", value) if isinstance(value, dict) else None


def write(logs: LogFiles, number: int, record: Mapping[str, JSON]) -> None:
    write_text_atomic(logs.attempt_record(number), json.dumps(record, indent=2) + "\n")


def records(logs: LogFiles, before: int | None = None) -> list[tuple[int, dict[str, JSON]]]:
    """(folder number, record) of every readable attempt, in order; only those before
    ``before`` when given."""
    numbers = [n for n in logs.attempt_numbers() if before is None or n < before]
    found = [(n, read(logs, n)) for n in numbers]
    return [(n, r) for n, r in found if r is not None]


def begin(
    logs: LogFiles, number: int, record: Mapping[str, JSON], restarts: Mapping[str, int]
) -> Begun:
    """Write attempt ``number``'s record (with ``restarts``, the budgets spent so far), after
    completing the earlier ones that never reported."""
    earlier = records(logs, before=number)
    for index, (folder, old) in enumerate(earlier):
        if old.get("ended") is None:
            last = index == len(earlier) - 1
            spent = _counts(old.get("restarts")) if last else None
            cause = attempts.spent_cause(spent, restarts) if spent is not None else None
            write(logs, folder, _completed(logs, folder, old, cause or attempts.LOST))
    write(logs, number, {**record, "restarts": dict(restarts)})
    if not earlier:
        return Begun()
    rows = [attempts.row_of(r) for _, r in records(logs, before=number)]
    previous = rows[-1].attempt if rows else None
    metrics = attempts.requeue_metrics(rows, previous) if previous is not None else {}
    return Begun(previous=previous, requeues=metrics)


def end(logs: LogFiles, number: int, cause: str) -> None:
    """Attempt ``number`` ends now, by ``cause``."""
    record = read(logs, number)
    if record is not None:
        now = time.time()
        write(logs, number, attempts.ended(record, cause=cause, at=now, stamp=_stamp(now)))


def close_unreported(logs: LogFiles, cause: str) -> int | None:
    """Complete the newest attempt if it never reported its end; returns its number."""
    found = records(logs)
    if not found or found[-1][1].get("ended") is not None:
        return None
    folder, record = found[-1]
    write(logs, folder, _completed(logs, folder, record, cause))
    return folder


def note_system_steps(logs: LogFiles, number: int, steps: Mapping[str, JSON]) -> None:
    """Merge ``steps`` (first_step, last_step, interval_s) into the attempt's record."""
    record = read(logs, number)
    if record is not None:
        merged = {**attempts.system_steps(record), **steps}
        write(logs, number, {**record, "system_metrics": merged})


def first_system_step(logs: LogFiles, number: int) -> int:
    """Attempt ``number``'s first system metric step: after every earlier attempt's."""
    return attempts.next_system_step([r for _, r in records(logs, before=number)])


def write_tables(logs: LogFiles) -> Path:
    """Rebuild ``attempts.json`` and ``attempts.csv``; returns their folder, to upload."""
    rows = [attempts.row_of(r) for _, r in records(logs)]
    folder = logs.attempt_tables
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / TABLE_JSON, attempts.json_text(rows))
    write_text_atomic(folder / TABLE_CSV, attempts.csv_text(rows))
    return folder


def _completed(
    logs: LogFiles, number: int, record: Mapping[str, JSON], cause: str
) -> dict[str, JSON]:
    """A record completed at the attempt's last sign of life: its newest file."""
    at = _last_touched(logs.attempt(number))
    return attempts.ended(record, cause=cause, at=at, stamp=_stamp(at))


def _last_touched(folder: Path) -> float:
    times = [folder.stat().st_mtime] if folder.exists() else [time.time()]
    for path in folder.iterdir() if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times)


def _counts(value: JSON) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def _stamp(at: float) -> str:
    return time.strftime(STAMP, time.localtime(at))
