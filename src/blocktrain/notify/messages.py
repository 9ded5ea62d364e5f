"""Slack messages as pure functions: started, resumed, finished, crashed, requeued, killed.

Each builder returns a Slack payload from plain values; nothing here does I/O. Messages name
the call by its ``entry``: the notifier passes :func:`run_title`, the MLflow run's name where
the run has one (``train-baseline``), so that a sweep's runs tell each other apart.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping

from blocktrain.core.jobenv import JobContext
from blocktrain.core.outcome import one_line
from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, to_jsonable

Payload = dict[str, JSON]

# Slack rejects section text over 3000 characters; the margin absorbs titles and code fences.
BLOCK_LIMIT = 2900
# One argument's share of the dump, so that a single long value cannot hide all the others.
VALUE_LIMIT = 300
RESULT_LIMIT = 1000
SUMMARY_LIMIT = 300
TRACEBACK_LINES = 15
TRUNCATED = "… [truncated]"


def run_title(entry: str, run_name: str | None) -> str:
    """What messages call a call of ``entry``: its run's name, with the entry function's name
    after it when the run's name does not start with it (``lr-sweep-3 (train)``)."""
    if not run_name or run_name == entry:
        return entry
    if run_name.startswith(f"{entry}-"):
        return run_name
    return f"{run_name} ({entry})"


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
    note: str | None = None,
) -> Payload:
    """A crash: the exception on the first line, then the tail of its traceback.

    ``note``: why the job is not requeued, when it says so (see
    :func:`blocktrain.restart.repeated_crash_note`), shown under the first line.
    """
    header = _mentioned(
        mention,
        f":x: {_name(entry, redact)} crashed after {format_duration(duration_s)} "
        f"{_where(context, redact)} (attempt {context.attempt}): "
        f"{_truncate(_clean(one_line(error), redact), SUMMARY_LIMIT)}",
    )
    notes = [f":no_entry: {_clean(note, redact)}"] if note else []
    title = f"Traceback (last {TRACEBACK_LINES} lines)"
    tail = _code_section(title, _clean(traceback_tail(error), redact), keep_end=True)
    return _payload([header, *notes, *_link_sections(run_url, redact), tail])


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
        f"{_truncate(_clean(one_line(error), redact), SUMMARY_LIMIT)}",
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
