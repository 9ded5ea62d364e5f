"""One tracked call: ``@track`` and :func:`tracking`, one attempt of an MLflow run.

``@track`` (or :func:`tracking`) starts a run, or resumes the one named by ``BLOCKTRAIN_RUN_ID``
or a ``run_id`` argument; logs the resolved arguments as params (immutable: a conflicting value
is an error, never an overwrite), code and machine facts as tags, captures stdout/stderr per
attempt and rank, and ends the run with the status of how the call ended
(:func:`blocktrain.core.outcome.classify`). Only global rank 0 writes to MLflow, from a
background thread that buffers through outages (see :mod:`blocktrain.track.writer`).

This module puts the parts together in order; each part has its own module: the handle
(:mod:`~blocktrain.track.tracker`), the run's opening and closing
(:mod:`~blocktrain.track.lifecycle`), the attempt's local files
(:mod:`~blocktrain.track.attemptlogs`), its system metrics (:mod:`~blocktrain.track.sysmetrics`)
and the SIGTERM handler (:mod:`~blocktrain.track.sigterm`).

Must not: import mlflow or torch at module level, or talk to MLflow but through the parts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import traceback
from collections.abc import Callable, Generator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, overload

from blocktrain.core.jobenv import JobContext, job_context
from blocktrain.core.outcome import classify
from blocktrain.core.paths import LogFiles
from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, bound_arguments
from blocktrain.track.attemptlogs import captured_logs, keep_failure, run_key
from blocktrain.track.lifecycle import (
    close_run,
    mlflow_client_env,
    open_run,
    repeated_crash_note,
)
from blocktrain.track.sigterm import terminate_on_sigterm
from blocktrain.track.sysmetrics import sampled
from blocktrain.track.tracker import TrackConfig, Tracker, made_current

P = ParamSpec("P")
R = TypeVar("R")


@overload
def track(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def track(*, run_id_param: str = "run_id") -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def track(
    func: Callable[P, R] | None = None, /, *, run_id_param: str = "run_id"
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: run the function inside a tracked MLflow run (see :func:`tracking`).

    A parameter named ``run_id_param`` holding a run id makes the call resume that run.
    """

    def decorate(inner: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(inner)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            resolved = bound_arguments(inner, args, kwargs)
            with tracking(
                inner.__name__,
                resolved,
                run_id=_run_id_argument(resolved, run_id_param),
                source=inner,
            ) as tracker:
                result = inner(*args, **kwargs)
                log_returned_metrics(tracker, result)
                return result

        return wrapper

    return decorate(func) if func is not None else decorate


def _run_id_argument(resolved: Mapping[str, JSON], name: str) -> str | None:
    value = resolved.get(name)
    return value if isinstance(value, str) and value else None


def log_returned_metrics(tracker: Tracker, result: object) -> None:
    """A returned mapping of numbers (``{"val_acc": 0.93}``) is logged as final metrics."""
    if isinstance(result, Mapping):
        items = dict(result)  # pyright: ignore[reportUnknownArgumentType,reportUnknownVariableType]
        numbers = {
            str(k): float(v)  # pyright: ignore[reportUnknownArgumentType]
            for k, v in items.items()  # pyright: ignore[reportUnknownVariableType]
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        step = tracker.last_step
        # The values the run logged last at this step (a trainer's final evaluation) are
        # already points of its curves: a second point at the same step would only repeat them.
        fresh = {k: v for k, v in numbers.items() if tracker.logged.get(k) != (step, v)}
        if fresh:
            tracker.log_metrics(fresh, step)


@contextlib.contextmanager
def tracking(
    entry: str,
    args: Mapping[str, JSON],
    *,
    env: Mapping[str, str] | None = None,
    run_id: str | None = None,
    source: Callable[..., Any] | None = None,
) -> Generator[Tracker]:
    """Track the block as one attempt of a run; see the module docstring for what is logged."""
    environ = os.environ if env is None else env
    context = job_context(environ)
    if run_id is not None:
        context = replace(context, run_id=run_id)
    config = TrackConfig.from_environ(environ, Path.cwd())
    redact = Redactor.from_environ(environ)
    tracker = Tracker(
        context=context,
        config=config,
        attempt=context.attempt,
        attempt_dir=_logs(config, context).attempt(context.attempt),
    )
    with contextlib.ExitStack() as stack:
        if context.is_rank_zero:
            stack.enter_context(mlflow_client_env())
            open_run(tracker, entry, args, redact, source)
        stack.enter_context(captured_logs(tracker, redact))
        if context.is_rank_zero:
            stack.enter_context(sampled(tracker))
        stack.enter_context(made_current(tracker))
        stack.enter_context(terminate_on_sigterm())
        ending, failure, error = classify(None), "", None
        try:
            yield tracker
        except BaseException as exc:
            ending, error = classify(exc), exc
            if ending.mlflow_status == "FAILED":
                # Judged before the logs are closed and uploaded: in a launched job this records
                # the crash and asks for its requeue before srun may end this task.
                repeated_crash_note(exc)
            if ending.keeps_traceback:
                # Python prints the traceback only after the capture has ended; keep it in the log.
                failure = redact(traceback.format_exc())
            raise
        finally:
            stack.close()  # logs complete and fds restored before the last upload
            if failure:
                keep_failure(tracker, failure)
            close_run(tracker, ending.mlflow_status, error, redact)


def _logs(config: TrackConfig, context: JobContext) -> LogFiles:
    return LogFiles(config.log_dir / run_key(context))
