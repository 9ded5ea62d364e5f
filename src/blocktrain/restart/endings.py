"""Why another rank ended this attempt: what a rank that srun is ending must count (pure).

``srun --kill-on-bad-exit`` ends every task of the attempt once one of them fails, with the
SIGTERM a preemption sends too. So before a rank leaves on a SIGTERM as a preemption, it looks
for a failure of another rank in this attempt, in what the others left behind:

- a requeue already asked for (a crash within its budget, or a SIGTERM that reached one rank):
  the same cause, spent once per attempt;
- the attempt's crash, recorded but not requeued (the crash-loop guard, or a spent crash
  budget): the run ends FAILED with the crash's line, whichever rank raised it;
- a task that ended without a word (SIGKILL, the out-of-memory killer, a native abort, an
  interpreter that died before the protocol existed), from the exit statuses that each task's
  wrapper writes: a crash, within the crash budget; a preemption's restart would have no bound.

None of these: the SIGTERM is a preemption, as before. No files, no signals here.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass

from blocktrain.restart.config import Budget, budget_allows
from blocktrain.restart.crashes import Crash, repeated_crash_note

CRASH = "crash"


@dataclass(frozen=True, slots=True)
class PeerEnding:
    """How this rank leaves an attempt that another rank ended."""

    cause: str | None
    """The cause to ask a requeue for; None: the attempt is not requeued."""
    reason: str | None = None
    """Why the run ends without a requeue (when ``cause`` is None): its one line."""


def signal_statuses(restart_signal: str) -> frozenset[int]:
    """Exit statuses of a task that left on a signal Slurm sends to every task: a SIGTERM
    (the protocol leaves with its status, 143) and the restart signal before any handler."""
    named = getattr(signal, f"SIG{restart_signal}", signal.SIGTERM)
    return frozenset({128 + signal.SIGTERM, 128 + int(named)})


def describe_status(status: int) -> str:
    """``killed by SIGKILL (status 137)``, ``exited with status 1``."""
    if status > 128:
        try:
            return f"killed by {signal.Signals(status - 128).name} (status {status})"
        except ValueError:
            pass
    return f"exited with status {status}"


def failed_ranks(exits: Mapping[int, int], restart_signal: str) -> dict[int, int]:
    """The ranks, with their statuses, that ended without leaving on a signal for every task."""
    left = signal_statuses(restart_signal)
    return {rank: status for rank, status in sorted(exits.items()) if status not in (0, *left)}


def peer_ending(
    *,
    asked: str | None,
    crash: Crash | None,
    exits: Mapping[int, int],
    restart_signal: str,
    budgets: Mapping[str, Budget],
    spent: Mapping[str, int],
    run_id: str,
) -> PeerEnding | None:
    """What the attempt's records say another rank ended it with; None when they say nothing.

    ``asked``: the cause this attempt asked a requeue for; ``crash``: this attempt's recorded
    crash (the caller passes none of an earlier attempt); ``exits``: the non-zero exit statuses of
    the attempt's tasks, by rank.
    """
    if asked is not None:
        return PeerEnding(cause=asked)
    if crash is not None:
        if crash.repeated:
            return PeerEnding(cause=None, reason=repeated_crash_note(crash, run_id))
        what = f"rank {crash.rank}: {crash.summary}"
    else:
        failed = failed_ranks(exits, restart_signal)
        if not failed:
            return None
        rank, status = next(iter(failed.items()))
        what = f"rank {rank} {describe_status(status)} without recording why"
    # A crash recorded but not (yet) requeued: its own rank may still be asking; asking for it
    # here too spends the unit once all the same.
    if budget_allows(budgets, CRASH, spent):
        return PeerEnding(cause=CRASH)
    return PeerEnding(cause=None, reason=_spent(what, spent, budgets))


def _spent(what: str, spent: Mapping[str, int], budgets: Mapping[str, Budget]) -> str:
    return (
        f"{what} (not requeued: the crash restart budget is spent, {spent.get(CRASH, 0)} of "
        f"{budgets.get(CRASH)}; raise restarts.crashes in the profile and relaunch with "
        "slurm-launch --run-id)"
    )
