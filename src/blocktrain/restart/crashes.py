"""The crash-loop guard: how an attempt crashed, and whether the next one would crash the same way.

The first rank to crash keeps the attempt's crash in the run's ``last-crash.json``; a crash that
repeats the previous attempt's before either reached a step boundary is deterministic (a missing
path, a bad argument) and is not requeued (:func:`repeats_previous`). A rank that crashes later
in the same attempt (its collective failed because the first one left) follows the first one's
judgement (:func:`judge`): one rank's deterministic crash must end the run however the others
fail after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
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
    rank: int = 0
    repeated: bool = False
    """Judged a repeat of the previous attempt's crash: the attempt was not requeued."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "message": self.message,
                "summary": self.summary,
                "before_first_step": self.before_first_step,
                "job_key": self.job_key,
                "restart_count": self.restart_count,
                "rank": self.rank,
                "repeated": self.repeated,
            }
        )

    def same_attempt(self, other: Crash) -> bool:
        return self.job_key == other.job_key and self.restart_count == other.restart_count

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
                # Records written before these fields existed: rank 0 kept them, unjudged.
                rank=int(raw.get("rank", 0)),
                repeated=bool(raw.get("repeated", False)),
            )
        except (ValueError, TypeError, KeyError):
            return None


def crash_of(
    error: BaseException, *, before_first_step: bool, config: RestartConfig, rank: int = 0
) -> Crash:
    """The record of this attempt's crash with ``error`` on ``rank``."""
    kind = type(error)
    return Crash(
        kind=f"{kind.__module__}.{kind.__qualname__}",
        message=str(error),
        summary=one_line(error),
        before_first_step=before_first_step,
        job_key=config.job_key,
        restart_count=config.restart_count,
        rank=rank,
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


def ending_note(recorded: Crash | None, job_key: str, run_id: str) -> str | None:
    """The guard's line for a run whose job ended by it, from the run's crash record: for the
    watcher job, when the rank that reports (rank 0) left before it could say it."""
    if recorded is None or recorded.job_key != job_key or not recorded.repeated:
        return None
    return repeated_crash_note(recorded, run_id)


@dataclass(frozen=True, slots=True)
class CrashJudgement:
    """Whether the crash of this attempt is requeued (within the crash budget) or ends the run."""

    crash: Crash
    repeated: bool
    """It repeats the previous attempt's crash (:func:`repeats_previous`): not requeued."""
    note: str | None
    """:func:`repeated_crash_note` when ``repeated``."""
    first: bool = True
    """This crash is the attempt's first (``crash`` is then this one, to be recorded); else it
    follows the first one, recorded by another rank, and ``crash`` is that one."""


def judge(recorded: Crash | None, crash: Crash, run_id: str) -> CrashJudgement:
    """The judgement of ``crash``, given the crash the run folder holds (``recorded``).

    A record of the same attempt means another rank crashed first: this crash follows from it
    (its peer is gone) and gets its judgement. Otherwise the record is the previous attempt's,
    and the guard compares the two (:func:`repeats_previous`).
    """
    if recorded is not None and recorded.same_attempt(crash):
        note = repeated_crash_note(recorded, run_id) if recorded.repeated else None
        return CrashJudgement(crash=recorded, repeated=recorded.repeated, note=note, first=False)
    repeated = repeats_previous(recorded, crash)
    note = repeated_crash_note(crash, run_id) if repeated else None
    return CrashJudgement(crash=replace(crash, repeated=repeated), repeated=repeated, note=note)


def keep_crash(config: RestartConfig, crash: Crash) -> None:
    """Record this attempt's first crash, for the other ranks and the next attempt."""
    write_text_atomic(RunFiles(config.run_dir).last_crash, crash.to_json())


def read_crash(run_dir: Path) -> Crash | None:
    try:
        return Crash.from_json(RunFiles(run_dir).last_crash.read_text())
    except OSError:
        return None
