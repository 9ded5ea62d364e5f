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
import json
import logging
import os
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import ParamSpec, TypeVar, overload

from blocktrain.errors import RequeueRequested, StopRequested, Terminated
from blocktrain.redact import Redactor
from blocktrain.runinfo import JobContext, job_context
from blocktrain.values import JSON, bound_arguments, env_seconds, to_jsonable

P = ParamSpec("P")
R = TypeVar("R")
Payload = dict[str, JSON]
Metrics = Callable[[], Mapping[str, float]]

_log = logging.getLogger("blocktrain.notify")
WEBHOOK_VARIABLES = ("BLOCKTRAIN_SLACK_WEBHOOK_URL", "SLACK_WEBHOOK_URL")
MENTION_VARIABLE = "BLOCKTRAIN_SLACK_MENTION"
TIMEOUT_VARIABLE = "BLOCKTRAIN_SLACK_TIMEOUT_SECONDS"
# Slack rejects section text over 3000 characters; the margin absorbs titles and code fences.
BLOCK_LIMIT = 2900
# One argument's share of the dump, so that a single long value cannot hide all the others.
VALUE_LIMIT = 300
RESULT_LIMIT = 1000
SUMMARY_LIMIT = 300
TRACEBACK_LINES = 15
TRUNCATED = "… [truncated]"
DEFAULT_TIMEOUT_S = 3.0


@dataclass(frozen=True, kw_only=True, slots=True)
class NotifyConfig:
    """Where and how notifications are posted; read from the environment when a call starts."""

    webhook_url: str | None = None
    """``None`` turns every notification into a no-op."""
    mention: str | None = None
    """Prepended to end and crash messages: ``<@U123>`` for a member, ``<!here>`` for a channel."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = 1

    def __post_init__(self) -> None:
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("https://", "http://")
        ):
            # The URL is itself a credential, so the message does not repeat it.
            raise ValueError("the Slack webhook URL must start with https://")
        if not self.timeout_s > 0:
            raise ValueError(f"the Slack timeout must be positive, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be zero or more, got {self.retries}")

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None

    @property
    def max_post_s(self) -> float:
        """The longest one message can take: every try timing out."""
        return self.timeout_s * (self.retries + 1)

    @classmethod
    def from_environ(cls, env: Mapping[str, str], *, mention: str | None = None) -> NotifyConfig:
        """Read the webhook, mention and timeout; an explicit ``mention`` wins over the variable."""
        urls = (env.get(name, "").strip() for name in WEBHOOK_VARIABLES)
        return cls(
            webhook_url=next((url for url in urls if url), None),
            mention=mention or env.get(MENTION_VARIABLE, "").strip() or None,
            timeout_s=env_seconds(env, TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S),
        )


# ---- pure message builders -------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``3725`` -> ``1h02m``, ``65`` -> ``1m05s``, ``4.2`` -> ``4s``."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def start_message(
    entry: str,
    context: JobContext,
    args: Mapping[str, object],
    *,
    run_url: str | None,
    redact: Redactor,
) -> Payload:
    """The full message of a first attempt: where it runs, its arguments and its run link."""
    where = _where(context, redact)
    header = f":rocket: {_name(entry, redact)} started {where} (attempt {context.attempt})"
    sections = [header, *_link_sections(run_url, redact)]
    if args:
        sections.append(_code_section("Arguments", _args_text(args, redact)))
    return _payload(sections)


def resume_message(
    entry: str, context: JobContext, *, run_url: str | None, redact: Redactor
) -> Payload:
    """One line for a later attempt: the start message was already sent by the first."""
    line = (
        f":arrow_forward: {_name(entry, redact)} resumed, attempt {context.attempt} "
        f"{_where(context, redact)}"
    )
    if run_url:
        line += f" · {_link(run_url, redact)}"
    return _payload([line])


def finished_message(
    entry: str,
    context: JobContext,
    *,
    duration_s: float,
    result: object = None,
    metrics: Mapping[str, float] | None = None,
    run_url: str | None,
    mention: str | None,
    redact: Redactor,
) -> Payload:
    """Completion: duration, a summary of the returned value and the final metrics."""
    header = _mentioned(
        mention,
        f":white_check_mark: {_name(entry, redact)} finished after {format_duration(duration_s)} "
        f"{_where(context, redact)} (attempt {context.attempt})",
    )
    sections = [header, *_link_sections(run_url, redact)]
    if result is not None:
        returned = _truncate(_json_text(result, redact), RESULT_LIMIT)
        sections.append(_code_section("Returned", returned))
    if metrics:
        sections.append(_code_section("Final metrics", _metrics_text(metrics, redact)))
    return _payload(sections)


def crashed_message(
    entry: str,
    context: JobContext,
    error: BaseException,
    *,
    duration_s: float,
    run_url: str | None,
    mention: str | None,
    redact: Redactor,
) -> Payload:
    """A crash: the exception on the first line, then the tail of its traceback."""
    header = _mentioned(
        mention,
        f":x: {_name(entry, redact)} crashed after {format_duration(duration_s)} "
        f"{_where(context, redact)} (attempt {context.attempt}): "
        f"{_truncate(_clean(_one_line(error), redact), SUMMARY_LIMIT)}",
    )
    title = f"Traceback (last {TRACEBACK_LINES} lines)"
    tail = _code_section(title, _clean(traceback_tail(error), redact), keep_end=True)
    return _payload([header, *_link_sections(run_url, redact), tail])


def requeued_message(
    entry: str, context: JobContext, *, duration_s: float, redact: Redactor
) -> Payload:
    """One line: the attempt stopped after a checkpoint and the job continues in a new one."""
    line = (
        f":double_vertical_bar: {_name(entry, redact)} paused for requeue after "
        f"{format_duration(duration_s)} (attempt {context.attempt}) {_where(context, redact)}"
    )
    return _payload([line])


def killed_message(
    entry: str,
    context: JobContext,
    error: BaseException,
    *,
    duration_s: float,
    run_url: str | None,
    mention: str | None,
    redact: Redactor,
) -> Payload:
    """SIGTERM (scancel, time limit, node shutdown) or Ctrl-C stopped the attempt."""
    header = _mentioned(
        mention,
        f":octagonal_sign: {_name(entry, redact)} killed after {format_duration(duration_s)} "
        f"{_where(context, redact)} (attempt {context.attempt}): "
        f"{_truncate(_clean(_one_line(error), redact), SUMMARY_LIMIT)}",
    )
    return _payload([header, *_link_sections(run_url, redact)])


def traceback_tail(error: BaseException, lines: int = TRACEBACK_LINES) -> str:
    """The last ``lines`` lines of the formatted traceback, where the cause usually is."""
    text = "".join(traceback.format_exception(error)).rstrip()
    return "\n".join(text.splitlines()[-lines:])


def _escape(text: str) -> str:
    """Slack's mrkdwn escapes, so that user text cannot ping ``<!channel>`` or forge links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clean(text: str, redact: Redactor) -> str:
    # Redact before escaping and truncating: either could hide part of a secret from the match.
    return _escape(redact(text))


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def _keep_end(text: str, limit: int) -> str:
    return text if len(text) <= limit else TRUNCATED + text[len(text) - limit + len(TRUNCATED) :]


def _name(entry: str, redact: Redactor) -> str:
    return f"*{_clean(entry, redact)}*"


def _where(context: JobContext, redact: Redactor) -> str:
    job = f", job {context.job_id}" if context.job_id else ""
    return _clean(f"on {context.host}{job}", redact)


def _mentioned(mention: str | None, text: str) -> str:
    return f"{mention} {text}" if mention else text


def _link(run_url: str, redact: Redactor) -> str:
    if run_url.startswith(("https://", "http://")):
        return f"<{_clean(run_url, redact)}|MLflow run>"
    return f"MLflow {_clean(run_url, redact)}"


def _link_sections(run_url: str | None, redact: Redactor) -> list[str]:
    return [_link(run_url, redact)] if run_url else []


def _one_line(error: BaseException) -> str:
    message = str(error).strip()
    first = message.splitlines()[0] if message else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _json_text(value: object, redact: Redactor) -> str:
    # Redacting the structure, not its JSON text: JSON escapes could split a secret's characters.
    shown = redact.value(to_jsonable(value))
    return _escape(json.dumps(shown, ensure_ascii=False, default=str))


def _args_text(args: Mapping[str, object], redact: Redactor) -> str:
    return "\n".join(
        f"{_clean(name, redact)} = {_truncate(_json_text(value, redact), VALUE_LIMIT)}"
        for name, value in args.items()
    )


def _metrics_text(metrics: Mapping[str, float], redact: Redactor) -> str:
    return "\n".join(f"{_clean(name, redact)} = {value:.6g}" for name, value in metrics.items())


def _code_section(title: str, body: str, *, keep_end: bool = False) -> str:
    room = BLOCK_LIMIT - len(f"*{title}*\n```\n\n```")
    shown = _keep_end(body, room) if keep_end else _truncate(body, room)
    return f"*{title}*\n```\n{shown}\n```"


def _payload(sections: list[str]) -> Payload:
    """Section blocks, with the first one doubling as the plain-text notification fallback."""
    texts = [_truncate(section, BLOCK_LIMIT) for section in sections]
    blocks: list[JSON] = [{"type": "section", "text": {"type": "mrkdwn", "text": t}} for t in texts]
    return {"text": texts[0], "blocks": blocks}


# ---- the poster: the only I/O ----------------------------------------------------------------


def post(payload: Mapping[str, JSON], config: NotifyConfig, redact: Redactor) -> bool:
    """Send one message, retrying once; a failure is a one-line warning, never an exception."""
    if config.webhook_url is None:
        return False
    body = json.dumps(redact.value(payload)).encode()
    errors: list[str] = []
    for _ in range(config.retries + 1):
        try:
            _send(config.webhook_url, body, config.timeout_s)
        except (OSError, HTTPException, ValueError) as exc:
            errors.append(_one_line(exc))
        else:
            return True
    _log.warning(
        "Slack notification not sent after %d tries (%s); the job goes on",
        len(errors),
        redact(errors[-1]),
    )
    return False


def _send(url: str, body: bytes, timeout_s: float) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    # NotifyConfig restricts the scheme to http(s), which is what S310 asks to check.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()  # its unread body would keep the connection open
        raise


# ---- sessions and the decorator --------------------------------------------------------------


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
            _log.warning("Slack notification failed: %s", self.redact(_one_line(exc)))
            return None

    def deliver(self, payload: Payload) -> None:
        try:
            post(payload, self.config, self.redact)
        except Exception as exc:  # noqa: BLE001 - a notification must never fail the job
            _log.warning("Slack notification failed: %s", self.redact(_one_line(exc)))


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
    return NotifySession(
        entry=entry, context=context, config=config, redact=redact, run_url=run_url
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
    if error is None or (isinstance(error, SystemExit) and error.code in (None, 0)):
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
    if isinstance(error, RequeueRequested):
        return requeued_message(entry, context, duration_s=elapsed, redact=redact)
    if isinstance(error, Terminated | KeyboardInterrupt | StopRequested):
        return killed_message(
            entry, context, error, duration_s=elapsed, run_url=url, mention=mention, redact=redact
        )
    return crashed_message(
        entry, context, error, duration_s=elapsed, run_url=url, mention=mention, redact=redact
    )


def _final_metrics(metrics: Metrics | None) -> dict[str, float]:
    if metrics is None:
        return {}
    try:
        return {str(k): float(v) for k, v in metrics().items()}
    except Exception as exc:  # noqa: BLE001 - the message goes out without them
        _log.warning("final metrics for the Slack message unavailable: %s", _one_line(exc))
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
