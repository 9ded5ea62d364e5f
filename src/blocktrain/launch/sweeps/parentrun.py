"""A sweep's parent run on disk and in MLflow: its record, and its closing with the summary.

The launcher writes ``sweep.json`` in the launch folder beside the parent run it created (see
:mod:`..records.tracking`). The parent stays RUNNING until every run of the sweep has ended; then
:func:`settle` uploads ``sweep_summary.csv`` and ``sweep_summary.json`` to it, tags it with the
best run (``blocktrain.best_run_id``, ``blocktrain.best_run_name``) and ends it FINISHED, or
FAILED when a run failed. The finalizer (:mod:`..slurm.finalize`) calls it whenever it has looked at
runs of the sweep: on Slurm, the watcher job once the whole array has left the queue; without
Slurm, the supervisor as each element ends. It holds the sweep's lock, reads every run from
MLflow and writes the same result for the same runs, so any number of calls, in any order,
leave one summary of the latest state. A relaunched run of the sweep makes the parent RUNNING
again (:func:`reopen`) until its job ends too.

Must not decide anything: what the summary holds is :mod:`.summary`'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, cast

from blocktrain.core.atomic import locked, write_text_atomic
from blocktrain.core.paths import LaunchFiles, Layout
from blocktrain.launch.records import tracking
from blocktrain.launch.sweeps.expand import Best
from blocktrain.launch.sweeps.summary import (
    ChildResult,
    Summary,
    best_tags,
    csv_text,
    json_text,
    parent_status,
    summarize,
)
from blocktrain.track.backend import MlflowBackend

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_JSON = "sweep_summary.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepChild:
    run_id: str
    name: str
    values: dict[str, str]
    """Its values of the swept keys, as its params show them."""


@dataclass(kw_only=True, slots=True)
class SweepRecord:
    """``sweep.json``: what closing the parent needs, without asking the launcher again."""

    parent_run_id: str
    name: str
    tracking_uri: str
    swept: list[str]
    children: list[SweepChild] = field(default_factory=list[SweepChild])
    best_metric: str | None = None
    best_mode: Literal["min", "max"] = "min"

    @property
    def best_by(self) -> Best | None:
        return Best(self.best_metric, self.best_mode) if self.best_metric else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> SweepRecord:
        raw = json.loads(text)
        raw["children"] = [SweepChild(**child) for child in raw.get("children", [])]
        return SweepRecord(**raw)


def write_record(files: LaunchFiles, record: SweepRecord) -> None:
    write_text_atomic(files.sweep, record.to_json())


def read_record(files: LaunchFiles) -> SweepRecord | None:
    """The launch's sweep record; None for a launch of one run (or of an older version)."""
    try:
        return SweepRecord.from_json(files.sweep.read_text())
    except FileNotFoundError:
        return None


def settle(layout: Layout, launch_id: str) -> str | None:
    """Close the launch's parent run if every run of the sweep has ended; returns the status
    it set, or None (no sweep, or runs still open)."""
    files = layout.launch(launch_id)
    if not files.sweep.is_file():
        return None
    with locked(files.sweep_lock):
        record = read_record(files)
        if record is None:
            return None
        store = tracking.backend(record.tracking_uri, layout.root)
        runs = [store.get_run(child.run_id) for child in record.children]
        status = parent_status([str(run.info.status) for run in runs])
        if status is None:
            return None
        children = [
            ChildResult(
                run_id=child.run_id,
                name=child.name,
                status=str(run.info.status),
                values=child.values,
                metrics={str(k): float(v) for k, v in dict(run.data.metrics).items()},
            )
            for child, run in zip(record.children, runs, strict=True)
        ]
        summary = summarize(children, record.swept, record.best_by)
        folder = write_summary(files, summary, record.parent_run_id)
        store.log_artifacts(record.parent_run_id, str(folder), "")
        _tag_best(store, record.parent_run_id, summary)
        store.set_status(record.parent_run_id, status, None)
        return status


def write_summary(files: LaunchFiles, summary: Summary, parent_run_id: str) -> Path:
    folder = files.sweep_summary
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / SUMMARY_CSV, csv_text(summary))
    write_text_atomic(folder / SUMMARY_JSON, json_text(summary, parent_run_id))
    return folder


def _tag_best(store: MlflowBackend, parent_run_id: str, summary: Summary) -> None:
    tags = best_tags(summary)
    if tags:
        store.log_batch(parent_run_id, [], {}, tags)
        return
    # A relaunched run may have taken the best result with it: no stale best stays named.
    logged = cast("dict[str, str]", store.get_run(parent_run_id).data.tags)
    for key in ("blocktrain.best_run_id", "blocktrain.best_run_name"):
        if key in logged:
            store.client.delete_tag(parent_run_id, key)


def reopen(layout: Layout, launch_id: str) -> None:
    """A run of the sweep was relaunched: its parent is RUNNING again until that run ends."""
    record = read_record(layout.launch(launch_id))
    if record is not None:
        store = tracking.backend(record.tracking_uri, layout.root)
        store.set_status(record.parent_run_id, "RUNNING", None)
