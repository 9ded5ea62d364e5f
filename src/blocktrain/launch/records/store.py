"""Run records: what was launched, where its files are, which Slurm jobs ran it.

One JSON file per run under ``.blocktrain/runs/<run id>/run.json``, written atomically and
updated under a lock, so that concurrent launches never share a file and concurrent updates of
one run never lose each other's changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from blocktrain.core.atomic import locked, write_text_atomic
from blocktrain.core.paths import Layout
from blocktrain.core.values import JSON
from blocktrain.errors import BlocktrainError


@dataclass(kw_only=True, slots=True)
class JobEntry:
    job_id: str
    """``123``, or ``120_3`` for element 3 of array job 120."""
    submitted: str
    kind: str = "launch"
    watcher_id: str | None = None
    executor: str = "slurm"
    """``slurm``, or ``local`` for a job run on the launching machine without Slurm."""


@dataclass(kw_only=True, slots=True)
class RunRecord:
    run_id: str
    entry: str
    """``module:function`` of the entry function."""
    args: dict[str, JSON]
    profile: str
    profile_values: dict[str, JSON]
    launch_id: str
    created: str
    tracking_uri: str
    experiment: str
    name: str | None = None
    """The MLflow run name (see :mod:`..sweeps.naming`); None in records of older launches."""
    sweep_id: str | None = None
    array_index: int | None = None
    parent_run_id: str | None = None
    """The sweep's parent run, for a run of a launch of several (see :mod:`..sweeps.parentrun`)."""
    jobs: list[JobEntry] = field(default_factory=list[JobEntry])

    @property
    def latest_job(self) -> JobEntry | None:
        return self.jobs[-1] if self.jobs else None

    @property
    def executor(self) -> str | None:
        """Where the run's latest job runs (``slurm`` or ``local``); None before any job."""
        return self.jobs[-1].executor if self.jobs else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> RunRecord:
        raw = json.loads(text)
        raw["jobs"] = [JobEntry(**job) for job in raw.get("jobs", [])]
        return RunRecord(**raw)


def write_record(layout: Layout, record: RunRecord) -> None:
    write_text_atomic(layout.record_path(record.run_id), record.to_json())


def read_record(layout: Layout, run_id: str) -> RunRecord:
    path = layout.record_path(run_id)
    try:
        return RunRecord.from_json(path.read_text())
    except FileNotFoundError:
        raise BlocktrainError(f"no run {run_id} in {layout.runs}; see slurm-status --all") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise BlocktrainError(f"run record {path} is unreadable ({exc})") from None


def update_record(layout: Layout, run_id: str, change: Callable[[RunRecord], None]) -> RunRecord:
    """Read, change and write back one record under its lock."""
    with locked(layout.run(run_id).lock):
        record = read_record(layout, run_id)
        change(record)
        write_record(layout, record)
        return record


def all_records(layout: Layout) -> Iterator[RunRecord]:
    """Every readable record, newest first; unreadable ones are skipped (not this project's)."""
    paths = sorted(_record_paths(layout), key=_mtime, reverse=True)
    for path in paths:
        try:
            yield RunRecord.from_json(path.read_text())
        except (OSError, ValueError, TypeError, KeyError):
            continue


def _record_paths(layout: Layout) -> list[Path]:
    folders = layout.runs.iterdir() if layout.runs.is_dir() else ()
    return [path for path in (layout.run(f.name).record for f in folders) if path.is_file()]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# A run id (MLflow's 32 hex digits) or a prefix of one, or a job id: Slurm's (``120``,
# ``120_3``) or a local one (``L7``).
_IDENT = re.compile(r"[0-9a-f]{6,32}|L?[0-9]{1,18}(_[0-9]{1,9})?")


def find_runs(layout: Layout, ident: str) -> list[RunRecord]:
    """Runs matching a run id (or a unique prefix of at least 6 characters) or a job id
    (Slurm's, or a local one such as ``L7``)."""
    records = list(all_records(layout))
    exact = [r for r in records if r.run_id == ident]
    if exact:
        return exact
    by_job = [r for r in records if any(job_matches(j.job_id, ident) for j in r.jobs)]
    if by_job:
        return by_job
    if len(ident) >= 6:
        return [r for r in records if r.run_id.startswith(ident)]
    return []


def one_run(layout: Layout, ident: str) -> RunRecord:
    """The one run that a run id, a unique prefix of it (6+ characters) or a job id names: what
    ``slurm-launch --run-id`` takes, as the other commands do."""
    if not _IDENT.fullmatch(ident):
        shown = ident if len(ident) <= 40 else f"{ident[:40]}... ({len(ident)} characters)"
        raise BlocktrainError(
            f"{shown!r} is not a run id, a prefix of one (6+ hex characters) or a job id; "
            "see slurm-status --all"
        )
    found = find_runs(layout, ident)
    if not found:
        raise BlocktrainError(f"no run or job matches {ident!r}; see slurm-status --all")
    if len(found) > 1:
        listed = ", ".join(r.run_id[:12] for r in found[:5])
        raise BlocktrainError(
            f"{ident!r} matches {len(found)} runs ({listed}); give more of the run id"
        )
    return found[0]


def job_matches(job_id: str, ident: str) -> bool:
    """``120`` matches every element ``120_N`` of an array; ``120_3`` only that element."""
    return job_id == ident or job_id.split("_", 1)[0] == ident
