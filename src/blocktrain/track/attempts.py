"""A run's attempts as rows: when and where each ran, how it ended, which system metric steps
are its own; and the requeues they add up to.

Each attempt's ``attempt.json`` (see :mod:`blocktrain.track.attempthistory`) is one row. How an
attempt ended, its cause:

======================  =====================================================================
``finished``            the entry function returned
``preempted``           SIGTERM or ``scontrol requeue``: checkpointed and requeued
``time_limit``          the time-limit signal: checkpointed and requeued
``stopped``             ``slurm-stop``
``crashed``             an exception (requeued within the crash budget), or a non-zero exit
``killed``              SIGTERM outside the restart protocol, or Ctrl-C
``node_failure``        a node of the job failed (as the restart protocol or Slurm says)
``cancelled``,          Slurm's word for a job whose processes could not report
``out_of_memory``
``lost``                the attempt never reported and nothing else tells why (SIGKILL, or its
                        node went away while a later attempt ran)
======================  =====================================================================

Pure functions of plain records; no I/O.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

from blocktrain.core.outcome import REQUEUED, classify
from blocktrain.core.values import JSON

LOST = "lost"
NOT_REQUEUES = frozenset({"finished", "stopped"})
"""Endings after which no new attempt is due; every other one counts as a requeue when a
later attempt starts."""
REQUEUE_METRIC = "requeues."
_OUTCOME_CAUSES = {
    "finished": "finished", "stopped": "stopped", "killed": "killed",
    "exited": "crashed", "crashed": "crashed",
}  # fmt: skip
# The restart protocol's causes (restart.Cause, restarts.json keys) in this table's words.
_RESTART_CAUSES = {
    "timeout": "time_limit", "preemption": "preempted", "crash": "crashed", "stop": "stopped",
    "node_failure": "node_failure", "node-failure": "node_failure", "node": "node_failure",
}  # fmt: skip
_SLURM_CAUSES = {
    "COMPLETED": "finished", "PREEMPTED": "preempted", "TIMEOUT": "time_limit",
    "DEADLINE": "time_limit", "NODE_FAIL": "node_failure", "BOOT_FAIL": "node_failure",
    "CANCELLED": "cancelled", "OUT_OF_MEMORY": "out_of_memory", "FAILED": "crashed",
}  # fmt: skip
_WORD = re.compile(r"[^a-z0-9_]+")


def cause_of(error: BaseException | None) -> str:
    """How the call that raised ``error`` (None: returned) ended its attempt."""
    outcome = classify(error)
    if outcome is REQUEUED and error is not None:
        return restart_cause(str(error.args[0]) if error.args else "")
    return _OUTCOME_CAUSES.get(outcome.name, outcome.name)


def restart_cause(word: str) -> str:
    """The restart protocol's cause (``timeout``, ``preemption``, ...) in this table's words."""
    known = _RESTART_CAUSES.get(word.strip().lower())
    return known or _WORD.sub("_", word.strip().lower()).strip("_") or "requeued"


def slurm_cause(state: str) -> str:
    """Slurm's final state of a job whose processes did not report (``NODE_FAIL``, ...)."""
    return _SLURM_CAUSES.get(state.split(" ", 1)[0].upper(), LOST)


def spent_cause(before: Mapping[str, int], after: Mapping[str, int]) -> str | None:
    """The one restart budget spent between two readings of restarts.json, if exactly one was:
    what the restart protocol said about an attempt that could not report itself."""
    risen = [cause for cause, count in after.items() if count > before.get(cause, 0)]
    return restart_cause(risen[0]) if len(risen) == 1 else None


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptRow:
    """One attempt, as ``attempts.json`` and ``attempts.csv`` show it."""

    attempt: int
    job_id: str | None
    started: str | None
    ended: str | None
    """None while the attempt runs."""
    cause: str | None
    """How it ended (see the module docstring); None while it runs."""
    nodes: str | None
    duration_s: float | None
    system_metrics_first_step: int | None
    """Its first ``system/`` metric step; its samples run up to the next attempt's first."""
    system_metrics_last_step: int | None


def system_steps(record: Mapping[str, JSON]) -> dict[str, JSON]:
    """The record's ``system_metrics``: first_step, last_step and interval_s, where known."""
    return _mapping(record.get("system_metrics"))


def row_of(record: Mapping[str, JSON]) -> AttemptRow:
    """The row of one ``attempt.json``."""
    steps = system_steps(record)
    return AttemptRow(
        attempt=_int(record.get("attempt")) or 0,
        job_id=_str(record.get("job_id")),
        started=_str(record.get("started")),
        ended=_str(record.get("ended")),
        cause=_str(record.get("cause")),
        nodes=_str(record.get("nodes")) or _str(record.get("host")),
        duration_s=_float(record.get("duration_s")),
        system_metrics_first_step=_int(steps.get("first_step")),
        system_metrics_last_step=_int(steps.get("last_step")),
    )


def ended(record: Mapping[str, JSON], *, cause: str, at: float, stamp: str) -> dict[str, JSON]:
    """``record`` completed: when (``at`` epoch seconds, ``stamp`` as written) and why."""
    started_at = _float(record.get("started_at"))
    done = dict(record)
    done["ended"] = stamp
    done["ended_at"] = at
    done["cause"] = cause
    done["duration_s"] = round(at - started_at, 3) if started_at is not None else None
    return done


def requeue_metrics(rows: Sequence[AttemptRow], attempt: int) -> dict[str, float]:
    """``requeues.<cause>``: how many attempts up to ``attempt`` ended by that attempt's cause,
    once a later attempt started (empty if ``attempt`` ended otherwise or is unknown)."""
    row = next((r for r in rows if r.attempt == attempt), None)
    if row is None or row.cause is None or row.cause in NOT_REQUEUES:
        return {}
    count = sum(1 for r in rows if r.attempt <= attempt and r.cause == row.cause)
    return {f"{REQUEUE_METRIC}{row.cause}": float(count)}


def next_system_step(records: Sequence[Mapping[str, JSON]]) -> int:
    """The first system metric step of a new attempt: past every step of the earlier ones.

    An attempt that never reported its last step is assumed to have sampled as often as its
    interval allows in the time it ran, so that its steps are never reused.
    """
    following = 0
    for record in records:
        steps = system_steps(record)
        first = _int(steps.get("first_step"))
        if first is None:
            continue
        last = _int(steps.get("last_step"))
        if last is None:
            interval = _float(steps.get("interval_s")) or 1.0
            duration = _float(record.get("duration_s")) or 0.0
            last = first + math.ceil(duration / interval) + 1
        following = max(following, last + 1)
    return following


def csv_text(rows: Sequence[AttemptRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = [f.name for f in fields(AttemptRow)]
    writer.writerow(names)
    for row in rows:
        values = asdict(row)
        writer.writerow(["" if values[n] is None else values[n] for n in names])
    return out.getvalue()


def json_text(rows: Sequence[AttemptRow]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2) + "\n"


def _mapping(value: JSON) -> dict[str, JSON]:
    return value if isinstance(value, dict) else {}


def _str(value: JSON) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: JSON) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: JSON) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
