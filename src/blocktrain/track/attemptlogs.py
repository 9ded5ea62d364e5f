"""One attempt's local files: captured stdout/stderr, ``attempt.json``, ``status.json``, uploads.

Every rank captures its own streams into the attempt's folder (see
:class:`blocktrain.core.paths.LogFiles`); rank 0 also writes the attempt record and the run's
local status, and uploads the folder to the run's artifacts every ``upload_interval_s``.

Must not: talk to MLflow but through the tracker's writer, or fail the job over a status file.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Generator

from blocktrain.core.files import write_text_atomic
from blocktrain.core.jobenv import JobContext
from blocktrain.core.redact import Redactor
from blocktrain.track.tracker import Tracker


def run_key(context: JobContext) -> str:
    """A folder name every rank of an attempt derives alike, without talking to the others."""
    if context.run_id:
        return context.run_id
    if context.job_id:
        return f"job-{context.job_id}"
    return f"local-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


@contextlib.contextmanager
def captured_logs(tracker: Tracker, redact: Redactor) -> Generator[None]:
    """Capture this rank's streams for the block; rank 0 uploads them meanwhile."""
    from blocktrain.track.capture import captured

    rank = tracker.context.rank
    folder = tracker.attempt_dir
    folder.mkdir(parents=True, exist_ok=True)
    if tracker.context.is_rank_zero:
        _write_attempt_record(tracker)
        write_local_status(tracker, "RUNNING")
    stop = threading.Event()
    uploader = threading.Thread(
        target=_upload_periodically, args=(tracker, stop), name="blocktrain-logs", daemon=True
    )
    with captured(folder / f"rank-{rank}.out", folder / f"rank-{rank}.err", redact):
        uploader.start()
        try:
            yield
        finally:
            stop.set()
            uploader.join(timeout=5)


def keep_failure(tracker: Tracker, failure: str) -> None:
    """Append a traceback to this rank's error log (Python prints it after the capture ended)."""
    with (tracker.attempt_dir / f"rank-{tracker.context.rank}.err").open("a") as err:
        err.write(failure)


def _write_attempt_record(tracker: Tracker) -> None:
    context = tracker.context
    record = {
        "attempt": tracker.attempt,
        "host": context.host,
        "job_id": context.job_id,
        "array_index": context.array_index,
        "world_size": context.world_size,
        "slurm_restart_count": context.restart_count,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = tracker.logs.attempt_record(context.attempt)
    path.write_text(json.dumps(record, indent=2) + "\n")


def upload_logs(tracker: Tracker, status: str = "RUNNING", reason: str | None = None) -> None:
    """Refresh the local status and queue the attempt's folder for upload."""
    if tracker.context.is_rank_zero:
        write_local_status(tracker, status, reason)
    tracker.log_artifacts(tracker.attempt_dir, f"logs/attempt-{tracker.attempt}")


def write_local_status(tracker: Tracker, status: str, reason: str | None = None) -> None:
    """``status.json`` beside the attempts: what slurm-status shows without asking MLflow.

    ``reason``: one line on why the attempt ended so (the exception of a failure).
    """
    record: dict[str, object] = {
        "run_id": tracker.run_id,
        "attempt": tracker.attempt,
        "status": status,
        "metrics": tracker.latest_metrics,
        "updated": time.time(),
    }
    if reason is not None:
        record["reason"] = reason
    with contextlib.suppress(OSError):
        write_text_atomic(tracker.logs.status, json.dumps(record))


def _upload_periodically(tracker: Tracker, stop: threading.Event) -> None:
    while not stop.wait(tracker.config.upload_interval_s):
        upload_logs(tracker)
