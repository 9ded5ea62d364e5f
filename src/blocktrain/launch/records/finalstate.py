"""The one final state of a run whose jobs have left the queue, as every place must show it.

A run's end is written in three places by different processes: MLflow's status (by the
tracker, ``slurm-cancel`` or the finalizer), ``status.json`` (by rank 0's tracker) and the
``finished`` marker (by the worker, once the entry function returned). A process killed at the
wrong instant, or a cancel racing the tasks' own last words, leaves them disagreeing. Once the
run's jobs have left the queue for good, :func:`settled` decides, from what each place says,
the state all of them get, and :func:`status_text` rewrites ``status.json`` to it.

Pure functions; reading and writing are the finalizer's (:mod:`..slurm.finalize`).
"""

from __future__ import annotations

import json
from typing import cast

FINAL = ("FINISHED", "FAILED", "KILLED")


def unreported_status(job_state: str) -> str:
    """The status of a run whose job ended in ``job_state`` without reporting its end."""
    return "KILLED" if job_state.startswith("CANCELLED") else "FAILED"


def settled(*, mlflow: str | None, local: str | None, finished: bool, job_state: str) -> str:
    """The final state of a run, from MLflow's status, status.json's and the finished marker.

    The run's own word that it finished comes first: the marker is written only after the
    entry function returned, so a FAILED beside it is a status that arrived out of order.
    Then a final status already set (``slurm-cancel``'s KILLED, a crash's FAILED), MLflow's
    before the local file's; a run still open everywhere ended without reporting, as its
    job's state tells.
    """
    if finished or "FINISHED" in (mlflow, local):
        return "FINISHED"
    for said in (mlflow, local):
        if said in FINAL:
            return said
    return unreported_status(job_state)


def status_text(
    old: str | None, *, run_id: str, status: str, reason: str | None, now: float
) -> str:
    """status.json with ``status`` (and ``reason`` when given), its other fields kept."""
    record = _fields(old)
    record.setdefault("run_id", run_id)
    record["status"] = status
    record["updated"] = now
    if reason is not None:
        record["reason"] = reason
    elif status == "FINISHED":
        record.pop("reason", None)
    return json.dumps(record)


def local_said(text: str | None) -> str | None:
    """``status`` of status.json's text; None when absent or unreadable."""
    status = _fields(text).get("status")
    return status if isinstance(status, str) else None


def _fields(text: str | None) -> dict[str, object]:
    """status.json's text as an object; empty when absent, unreadable or not an object."""
    if text is None:
        return {}
    try:
        loaded: object = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(k): v for k, v in cast(dict[object, object], loaded).items()}
