"""The crash-loop guard: how an attempt crashed, and whether the next one would crash the same way.

Rank 0 keeps the crash of an attempt in the run's ``last-crash.json``; a crash that repeats the
previous attempt's before either reached a step boundary is deterministic (a missing path, a
bad argument) and is not requeued (:func:`repeats_previous`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from blocktrain.core.atomic import write_text_atomic
from blocktrain.core.outcome import one_line
from blocktrain.core.paths import RunFiles
from blocktrain.restart.config import RestartConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class Crash:
    """How one attempt crashed: what rank 0 keeps in the run's ``last-crash.json``."""

    kind: str
    """The exception's type, with its module: ``builtins.FileNotFoundError``."""
    message: str
    summary: str
    """One line for people: ``FileNotFoundError: [Errno 2] No such file or directory: 'x'``."""
    before_first_step: bool
    """The attempt crashed before its code reached a step boundary."""
    job_key: str
    restart_count: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "message": self.message,
                "summary": self.summary,
                "before_first_step": self.before_first_step,
                "job_key": self.job_key,
                "restart_count": self.restart_count,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Crash | None:
        """None for a torn or foreign file: the next crash is then requeued as usual."""
        try:
            raw = json.loads(text)
            return cls(
                kind=str(raw["kind"]),
                message=str(raw["message"]),
                summary=str(raw["summary"]),
                before_first_step=bool(raw["before_first_step"]),
                job_key=str(raw["job_key"]),
                restart_count=int(raw["restart_count"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


def crash_of(error: BaseException, *, before_first_step: bool, config: RestartConfig) -> Crash:
    """The record of this attempt's crash with ``error``."""
    kind = type(error)
    return Crash(
        kind=f"{kind.__module__}.{kind.__qualname__}",
        message=str(error),
        summary=one_line(error),
        before_first_step=before_first_step,
        job_key=config.job_key,
        restart_count=config.restart_count,
    )


def repeats_previous(previous: Crash | None, crash: Crash) -> bool:
    """Whether ``crash`` repeats the previous attempt's: the same exception type and message,
    both before their first step boundary, in consecutive attempts of the same job.

    Such a crash is deterministic (a missing path, a bad argument): another attempt would
    crash the same way. A crash after progress may be transient and keeps its budget; a
    relaunch (a new job) gets a new attempt even if it crashes as the last one did.
    """
    return (
        previous is not None
        and crash.before_first_step
        and previous.before_first_step
        and previous.job_key == crash.job_key
        and previous.restart_count == crash.restart_count - 1
        and previous.kind == crash.kind
        and previous.message == crash.message
    )


def repeated_crash_note(crash: Crash, run_id: str) -> str:
    """What the run's status, its logs and Slack say when the guard stops requeueing."""
    return (
        f"{crash.summary} (not requeued: the previous attempt failed the same way before its "
        f"first step; fix the cause, then run slurm-launch --run-id {run_id})"
    )


@dataclass(frozen=True, slots=True)
class CrashJudgement:
    """Whether the crash of this attempt is requeued (within the crash budget) or ends the run."""

    crash: Crash
    repeated: bool
    """It repeats the previous attempt's crash (:func:`repeats_previous`): not requeued."""
    note: str | None
    """:func:`repeated_crash_note` when ``repeated``."""


def keep_crash(config: RestartConfig, crash: Crash) -> None:
    """Record this attempt's crash for the next attempt to compare with (rank 0 only)."""
    write_text_atomic(RunFiles(config.run_dir).last_crash, crash.to_json())


def read_crash(run_dir: Path) -> Crash | None:
    try:
        return Crash.from_json(RunFiles(run_dir).last_crash.read_text())
    except OSError:
        return None
