"""One attempt's local files: captured stdout/stderr, ``attempt.json``, ``status.json``, uploads.

Every rank captures its own streams into the attempt's folder (see
:class:`blocktrain.core.paths.LogFiles`) and records there which node it runs on; rank 0 also
writes the attempt record and the run's local status, and uploads the folder to the run's
artifacts every ``upload_interval_s``. When
the attempt starts and when it ends, rank 0 also uploads the run's table of attempts
(:mod:`~blocktrain.track.attempthistory`), and once a later attempt has started, logs the
requeue of the one before as ``requeues.<cause>`` at that attempt's step.

Must not: talk to MLflow but through the tracker's writer, or fail the job over a status file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Generator

from blocktrain.core.atomic import write_text_atomic, write_text_or_overwrite
from blocktrain.core.jobenv import JobContext
from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON
from blocktrain.track import attempthistory
from blocktrain.track.tracker import Tracker

_log = logging.getLogger("blocktrain.track")
_REASON_ON_FULL_DISK = 3000
"""status.json's first block holds 4 KiB: a reason written over it on a full disk is cut to fit."""


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

    context, logs = tracker.context, tracker.logs
    tracker.attempt_dir.mkdir(parents=True, exist_ok=True)
    _write_rank_record(tracker)
    if tracker.context.is_rank_zero:
        begin_attempt(tracker)
        write_local_status(tracker, "RUNNING")
        _upload_previous_attempt(tracker)
    stop = threading.Event()
    uploader = threading.Thread(
        target=_upload_periodically, args=(tracker, stop), name="blocktrain-logs", daemon=True
    )
    out, err = (logs.rank_log(context.attempt, context.rank, stream) for stream in ("out", "err"))
    with captured(out, err, redact):
        uploader.start()
        try:
            yield
        finally:
            stop.set()
            uploader.join(timeout=5)


def keep_failure(tracker: Tracker, failure: str) -> None:
    """Append a traceback to this rank's error log (Python prints it after the capture ended)."""
    context = tracker.context
    with tracker.logs.rank_log(context.attempt, context.rank, "err").open("a") as err:
        err.write(failure)


def _upload_previous_attempt(tracker: Tracker) -> None:
    """Upload the previous attempt's folder again: an attempt killed outright (its node lost,
    its job killed) uploaded only what it had at its last periodic upload."""
    previous = tracker.logs.attempt(tracker.attempt - 1)
    if previous.is_dir():
        tracker.log_artifacts(previous, f"logs/{previous.name}")


def _write_rank_record(tracker: Tracker) -> None:
    """Where this rank runs: what ``slurm-log --node`` finds its logs by (every rank)."""
    context = tracker.context
    record = {
        "rank": context.rank,
        "node": context.host,
        "node_rank": context.node_rank,
        "local_rank": context.local_rank,
        "pid": os.getpid(),
    }
    with contextlib.suppress(OSError):
        path = tracker.logs.rank_record(context.attempt, context.rank)
        write_text_atomic(path, json.dumps(record) + "\n")


def begin_attempt(tracker: Tracker) -> None:
    """Write the attempt's record, log the previous attempt's requeue, upload the table."""
    from blocktrain import restart

    context, config = tracker.context, tracker.config
    now = time.time()
    record: dict[str, JSON] = {
        "attempt": tracker.attempt,
        "host": context.host,
        "nodes": config.nodes or context.host,
        "job_id": context.job_id,
        "array_index": context.array_index,
        "world_size": context.world_size,
        "slurm_restart_count": context.restart_count,
        "started": time.strftime(attempthistory.STAMP, time.localtime(now)),
        "started_at": now,
    }
    restarts = restart.read_counts(config.run_dir) if config.run_dir is not None else {}
    try:
        begun = attempthistory.begin(tracker.logs, context.attempt, record, restarts)
        tables = attempthistory.write_tables(tracker.logs)
    except OSError as exc:
        _log.warning("the attempt's record could not be written: %s", exc)
        return
    if begun.previous is not None:
        tracker.log_side_metrics(begun.requeues, begun.previous)
    tracker.log_artifacts(tables, "")


def end_attempt(tracker: Tracker, cause: str) -> None:
    """Complete the attempt's record with how it ended, and upload the table (rank 0)."""
    try:
        attempthistory.end(tracker.logs, tracker.context.attempt, cause)
        tables = attempthistory.write_tables(tracker.logs)
    except OSError as exc:
        _log.warning("the attempt's record could not be completed: %s", exc)
        return
    tracker.log_artifacts(tables, "")


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
    # On a full disk, at least the state and its reason, over the file's own blocks.
    last_word = {k: v for k, v in record.items() if k != "metrics"}
    if reason is not None and len(reason) > _REASON_ON_FULL_DISK:
        last_word["reason"] = reason[: _REASON_ON_FULL_DISK - 3] + "..."
    write_text_or_overwrite(tracker.logs.status, json.dumps(record), json.dumps(last_word))


def _upload_periodically(tracker: Tracker, stop: threading.Event) -> None:
    while not stop.wait(tracker.config.upload_interval_s):
        upload_logs(tracker)
