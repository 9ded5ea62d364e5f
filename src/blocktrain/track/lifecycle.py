"""Opening, resuming and closing the MLflow run of one attempt (global rank 0 only).

Opening sends what earlier outages left on disk, refuses a resume that would change a logged
param, creates the run (with git and entry tags) or resumes it under the next attempt number,
and marks it RUNNING; closing uploads the attempt's logs, sets the final status and waits a
bounded time for the writer, keeping what is left in a spill file for a later replay.

Must not: block training on MLflow (every record goes through the tracker's writer), or open a
run on ranks other than 0.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

from blocktrain.core.outcome import one_line
from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, flatten
from blocktrain.errors import TrackingError
from blocktrain.track.attemptlogs import end_attempt, keep_failure, upload_logs
from blocktrain.track.attempts import cause_of
from blocktrain.track.backend import ATTEMPT_TAG, MlflowBackend, latest_steps
from blocktrain.track.gitstate import git_state, git_tags
from blocktrain.track.replay import backend_for, replay_unsent, spill_path
from blocktrain.track.sysinfo import system_tags
from blocktrain.track.tracker import Tracker, param_strings
from blocktrain.track.writer import HeldSteps, Op, RunWriter

_log = logging.getLogger("blocktrain.track")
# MLflow's own client retries for minutes; our writer retries in the background instead.
_MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextlib.contextmanager
def mlflow_client_env() -> Generator[None]:
    """MLflow's client settings for the block, unless the user set their own."""
    saved = {k: os.environ.get(k) for k in _MLFLOW_CLIENT_ENV}
    for key, value in _MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def open_run(
    tracker: Tracker,
    entry: str,
    args: Mapping[str, JSON],
    redact: Redactor,
    source: Callable[..., Any] | None,
) -> None:
    """Create or resume the run and give ``tracker`` its writer and attempt number."""
    config, context = tracker.config, tracker.context
    backend = backend_for(config)
    params = param_strings({k: redact(str(v)) for k, v in flatten(dict(args)).items()})
    replay_unsent(backend, config.log_dir)
    previous_attempt, held = 0, None
    if context.run_id is not None:
        previous_attempt, known = _check_resumable(backend, context.run_id, params)
        # An attempt resumed from a checkpoint repeats the steps its predecessor logged after
        # it; the run keeps the points it holds. Unknown now (the server away), they are read
        # by the writer before it sends its first metrics, without holding up the training.
        held = known if known is not None else backend.latest_steps
        tracker.experiment_id = _experiment_of(backend, context.run_id)
    tracker.attempt = max(context.attempt, previous_attempt + 1)
    writer = RunWriter(backend, run_id=context.run_id, warn=_log.warning, held=held)
    tracker.writer = writer
    if context.run_id is None:
        tags, diff_dir = _code_tags(tracker, source)
        tags["blocktrain.entry"] = entry
        create = {"experiment": config.experiment, "run_name": config.run_name, "tags": tags}
        writer.submit(Op("create", create))
        if diff_dir is not None:
            tracker.log_artifacts(diff_dir, "code")
    writer.submit(Op("params", {"items": params}))
    writer.submit(Op("tags", {"items": _attempt_tags(tracker)}))
    writer.submit(Op("status", {"status": "RUNNING"}))
    tracker.log_metrics({"attempt": float(tracker.attempt)}, step=tracker.attempt)
    if writer.wait_run_id(config.start_timeout_s) is not None and tracker.experiment_id is None:
        with contextlib.suppress(Exception):
            tracker.experiment_id = backend.experiment_id(config.experiment)
    where = redact(tracker.run_url or f"a run not created yet ({config.tracking_uri})")
    _announce(f"tracking attempt {tracker.attempt} of {where}")


def _check_resumable(
    backend: MlflowBackend, run_id: str, params: Mapping[str, str]
) -> tuple[int, HeldSteps | None]:
    """Refuse a resume that would change a logged param; return the run's last attempt and
    the highest step of each of its metrics (None, and attempt 0, when MLflow is away)."""
    try:
        run = backend.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - classified below
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(
                f"no MLflow run {run_id} at {backend.uri}; check the id or MLFLOW_TRACKING_URI"
            ) from None
        _log.warning("MLflow unreachable, resuming run %s without checking its params", run_id)
        return 0, None
    logged: dict[str, str] = dict(run.data.params)
    changed = {k: (logged[k], v) for k, v in params.items() if k in logged and logged[k] != v}
    if changed:
        shown = "; ".join(f"{k}: logged {old!r}, now {new!r}" for k, (old, new) in changed.items())
        raise TrackingError(
            f"run {run_id} cannot be resumed with different arguments ({shown}); params are "
            "immutable: resume with the logged values or start a new run"
        )
    try:
        attempt = int(run.data.tags.get(ATTEMPT_TAG, "0"))
    except ValueError:
        attempt = 0
    return attempt, latest_steps(run)


def _experiment_of(backend: MlflowBackend, run_id: str) -> str | None:
    with contextlib.suppress(Exception):
        return str(backend.get_run(run_id).info.experiment_id)
    return None


def _code_tags(
    tracker: Tracker, source: Callable[..., Any] | None
) -> tuple[dict[str, str], Path | None]:
    """Git tags for a new run, and the folder holding the dirty diff if there is one."""
    state = git_state(_source_folder(source))
    tags = git_tags(state)
    if state is None or not state.dirty:
        return tags, None
    code_dir = tracker.logs.code
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / "git.diff").write_text(state.diff, encoding="utf-8")
    return tags, code_dir


def _source_folder(source: Callable[..., Any] | None) -> Path:
    if source is not None:
        with contextlib.suppress(TypeError, OSError):
            file = inspect.getsourcefile(inspect.unwrap(source))
            if file:
                return Path(file).resolve().parent
    return Path.cwd()


def _attempt_tags(tracker: Tracker) -> dict[str, str]:
    context = tracker.context
    tags = {
        ATTEMPT_TAG: str(tracker.attempt),
        "host": context.host,
        "world_size": str(context.world_size),
        **system_tags(),
    }
    if context.job_id is not None:
        tags["slurm.job_id"] = context.job_id
    if context.array_index is not None:
        tags["slurm.array_index"] = str(context.array_index)
    return tags


def close_run(tracker: Tracker, status: str, error: BaseException | None, redact: Redactor) -> None:
    """Upload the logs and the attempts table, end the run with ``status`` and flush, spilling
    what MLflow refused.

    A failure's one line (``error``) goes into ``status.json`` as its reason, and a crash that
    ends the run because it repeats the previous attempt's says so in the error log too.
    """
    writer = tracker.writer
    if writer is None:
        return
    reason = None
    if status == "FAILED" and error is not None:
        note = repeated_crash_note(error)
        reason = redact(note or one_line(error))
        if note is not None:
            keep_failure(tracker, f"blocktrain: {reason}\n")
    end_attempt(tracker, cause_of(error))
    upload_logs(tracker, status, reason)
    end = int(time.time() * 1000)
    writer.submit(Op("status", {"status": status, "end_time_ms": end}))
    key = writer.run_id or tracker.logs.folder.name
    spill = spill_path(tracker.config.log_dir, key, tracker.attempt)
    left = writer.close(tracker.config.flush_timeout_s, spill)
    if writer.repeats:
        _log.info(
            "%d metric points were not logged again: the run held their steps already",
            writer.repeats,
        )
    _announce(f"run {writer.run_id or '(not created)'} ended {status}")
    if left:
        _log.warning(
            "MLflow stayed unreachable: %d records kept in %s; they are sent at the next start "
            "of any tracked run in this project, or now with: python -m blocktrain.track replay",
            left,
            spill,
        )


def repeated_crash_note(error: BaseException) -> str | None:
    """Why a crash ends the run instead of being requeued, when it repeats the previous
    attempt's before any step (:func:`blocktrain.restart.judge_crash`); else None."""
    from blocktrain import restart

    judgement = restart.judge_crash(error)
    return judgement.note if judgement is not None else None


def _announce(line: str) -> None:
    """One status line on stderr for people watching the job; rank 0 only, as callers ensure."""
    sys.stderr.write(f"blocktrain: {line}\n")
    sys.stderr.flush()
