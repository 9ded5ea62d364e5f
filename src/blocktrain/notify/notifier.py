"""Slack notifications for an entry function: started, finished, crashed, paused, killed.

``@notify`` (or :func:`notifying`) posts to the Slack incoming webhook named by
``BLOCKTRAIN_SLACK_WEBHOOK_URL`` (else ``SLACK_WEBHOOK_URL``), read when a call starts; without
one nothing is sent. A resumed attempt and a requeue each get one line rather than a full
message, and only global rank 0 posts. A notification never fails the job: each post times out
after ``BLOCKTRAIN_SLACK_TIMEOUT_SECONDS`` (3 s), is retried once, then dropped with a one-line
warning. ``BLOCKTRAIN_SLACK_MENTION`` (such as ``<@U123>``) is prepended to end and crash messages.

The message builders are pure functions that return Slack payloads; :func:`post` is the only
part doing I/O, and it redacts every payload at that boundary.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar, overload

from blocktrain.core import envvars
from blocktrain.core.jobenv import JobContext, job_context
from blocktrain.core.outcome import classify, one_line
from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, bound_arguments
from blocktrain.notify.config import NotifyConfig
from blocktrain.notify.messages import (
    crashed_message,
    finished_message,
    killed_message,
    requeued_message,
    resume_message,
    run_title,
    start_message,
)
from blocktrain.notify.slack import post

_log = logging.getLogger("blocktrain.notify")
P = ParamSpec("P")
R = TypeVar("R")
Payload = dict[str, JSON]
Metrics = Callable[[], Mapping[str, float]]


@dataclass(slots=True)
class NotifySession:
    """The handle of one notified call; inert on ranks other than 0 and without a webhook."""

    entry: str
    context: JobContext
    config: NotifyConfig
    redact: Redactor
    run_url: str | None = None
    """The MLflow run link; it may be set after the start message, for the end message."""
    result: object = None
    started: float = field(default_factory=time.monotonic)

    @property
    def active(self) -> bool:
        return self.config.enabled and self.context.is_rank_zero

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def set_result(self, value: object) -> None:
        """Record the returned value, summarised in the completion message."""
        self.result = value

    def send(self, build: Callable[[], Payload]) -> None:
        """Build and post a message when active; no fault of either reaches the caller."""
        payload = self.prepare(build)
        if payload is not None:
            self.deliver(payload)

    def prepare(self, build: Callable[[], Payload]) -> Payload | None:
        """The message, or None when inactive or when building it failed (with a warning)."""
        if not self.active:
            return None
        try:
            return build()
        except Exception as exc:  # noqa: BLE001 - a notification must never fail the job
            _log.warning("Slack notification failed: %s", self.redact(one_line(exc)))
            return None

    def deliver(self, payload: Payload) -> None:
        try:
            post(payload, self.config, self.redact)
        except Exception as exc:  # noqa: BLE001 - a notification must never fail the job
            _log.warning("Slack notification failed: %s", self.redact(one_line(exc)))


@contextlib.contextmanager
def notifying(
    entry: str,
    args: Mapping[str, object],
    *,
    env: Mapping[str, str] | None = None,
    run_url: str | None = None,
    metrics: Metrics | None = None,
    mention: str | None = None,
) -> Generator[NotifySession]:
    """Post the start (or resume) message, run the block, post how it ended, and re-raise.

    Args:
        entry: The entry function's name, shown in every message.
        args: The resolved arguments, shown in the start message.
        env: Variables to read instead of ``os.environ`` (secrets of both are redacted).
        run_url: The MLflow run link, if known now; ``session.run_url`` may be set later.
        metrics: Called at the end for the final metrics of the completion message.
        mention: Overrides ``BLOCKTRAIN_SLACK_MENTION``.
    """
    session = _open_session(entry, os.environ if env is None else env, run_url, mention)
    # The opening message goes out in the background so that a slow webhook never delays the
    # start of training; the closing message waits for it, to keep the two in order.
    payload = session.prepare(functools.partial(_opening_message, session, args))
    opening = threading.Thread(
        target=session.deliver, args=(payload,), name="blocktrain-notify", daemon=True
    )
    if payload is not None:
        opening.start()
    try:
        yield session
    except BaseException as exc:
        if classify(exc).notice == "crashed":
            # Judged before any post: in a launched job this records the crash and asks for its
            # requeue, which must be done before srun, seeing another rank fail, ends this one.
            _repeated_crash_note(exc)
        _join_started(opening, session.config.max_post_s)
        session.send(functools.partial(_closing_message, session, exc, metrics))
        raise
    _join_started(opening, session.config.max_post_s)
    session.send(functools.partial(_closing_message, session, None, metrics))


def _join_started(thread: threading.Thread, timeout_s: float) -> None:
    if thread.ident is not None:
        thread.join(timeout_s)


def _open_session(
    entry: str, env: Mapping[str, str], run_url: str | None, mention: str | None
) -> NotifySession:
    context = job_context(env)
    # Secrets of the process and of an explicit env alike must stay out of messages.
    redact = Redactor.from_environ(os.environ, extra=Redactor.from_environ(env).secrets)
    config = _load_config(env, mention) if context.is_rank_zero else NotifyConfig()
    title = run_title(entry, env.get(envvars.RUN_NAME.name))
    return NotifySession(
        entry=title, context=context, config=config, redact=redact, run_url=run_url
    )


def _load_config(env: Mapping[str, str], mention: str | None) -> NotifyConfig:
    try:
        return NotifyConfig.from_environ(env, mention=mention)
    except ValueError as exc:
        _log.warning("Slack notifications are off: %s", exc)
        return NotifyConfig()


def _opening_message(session: NotifySession, args: Mapping[str, object]) -> Payload:
    entry, context, redact = session.entry, session.context, session.redact
    if context.attempt > 1:
        return resume_message(entry, context, run_url=session.run_url, redact=redact)
    return start_message(entry, context, args, run_url=session.run_url, redact=redact)


def _closing_message(
    session: NotifySession, error: BaseException | None, metrics: Metrics | None
) -> Payload:
    entry, context, redact = session.entry, session.context, session.redact
    elapsed, url, mention = session.elapsed_s, session.run_url, session.config.mention
    notice = classify(error).notice
    if notice == "finished" or error is None:  # the same case; the check narrows the type
        return finished_message(
            entry,
            context,
            duration_s=elapsed,
            result=session.result,
            metrics=_final_metrics(metrics),
            run_url=url,
            mention=mention,
            redact=redact,
        )
    if notice == "requeued":
        return requeued_message(entry, context, duration_s=elapsed, redact=redact)
    if notice == "killed":
        return killed_message(
            entry, context, error, duration_s=elapsed, run_url=url, mention=mention, redact=redact
        )
    return crashed_message(
        entry,
        context,
        error,
        duration_s=elapsed,
        run_url=url,
        mention=mention,
        redact=redact,
        note=_repeated_crash_note(error),
    )


def _repeated_crash_note(error: BaseException) -> str | None:
    """Why a launched job's crash is not requeued, when it repeats the previous attempt's."""
    from blocktrain.track.lifecycle import repeated_crash_note

    return repeated_crash_note(error)


def _final_metrics(metrics: Metrics | None) -> dict[str, float]:
    if metrics is None:
        return {}
    try:
        return {str(k): float(v) for k, v in metrics().items()}
    except Exception as exc:  # noqa: BLE001 - the message goes out without them
        _log.warning("final metrics for the Slack message unavailable: %s", one_line(exc))
        return {}


@overload
def notify(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def notify(*, mention: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def notify(
    func: Callable[P, R] | None = None, /, *, mention: str | None = None
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: Slack messages for each call of the function (see :func:`notifying`).

    Stacked inside ``@track``, the messages carry the MLflow run link and the final metrics.

    Args:
        func: The function, when used bare as ``@notify``.
        mention: Overrides ``BLOCKTRAIN_SLACK_MENTION`` for this function's messages.
    """

    def decorate(inner: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(inner)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            run_url, metrics = _tracked_run()
            resolved = _resolved_arguments(inner, args, kwargs)
            with notifying(
                inner.__name__, resolved, run_url=run_url, metrics=metrics, mention=mention
            ) as session:
                result = inner(*args, **kwargs)
                session.set_result(result)
                return result

        return wrapper

    return decorate(func) if func is not None else decorate


def _resolved_arguments(
    func: Callable[..., object], args: tuple[object, ...], kwargs: Mapping[str, object]
) -> dict[str, JSON]:
    try:
        return bound_arguments(func, args, kwargs)
    except TypeError:
        return {}  # arguments that do not bind: the call itself raises the real error


def _tracked_run() -> tuple[str | None, Metrics | None]:
    """The run link and latest metrics of the ``@track`` call this one runs inside, if any."""
    from blocktrain.track import current

    tracker = current()
    if tracker is None:
        return None, None
    return tracker.run_url, lambda: dict(tracker.latest_metrics)
