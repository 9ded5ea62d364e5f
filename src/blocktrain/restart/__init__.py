"""The job runtime: what runs in every task of a launched job, and how an attempt ends.

- :mod:`.worker`: the callable each task runs (pickled by submitit, or started by the local
  supervisor): it installs the restart protocol, restores the run's environment and code, sets
  up torch.distributed and calls the entry function with the run's arguments;
- :mod:`.cpus`: as many torch threads as the task has CPUs, set by the worker for every job;
- :mod:`.jobspec`: what the launcher hands a task (a plain, picklable description);
- :mod:`.protocol`: the signal handlers that only set a flag, the agreement of all ranks at a
  step boundary (:func:`should_stop`, :func:`signalled`) and how an attempt leaves
  (:func:`stop_now`, and :func:`leave_if_requeued` for a rank that waits for the others);
- :mod:`.config`: the restart settings each task receives, why an attempt stops, and the
  budget per cause (pure);
- :mod:`.crashes`: the crash-loop guard;
- :mod:`.endings`: what a rank that srun ends counts when another rank failed first (pure);
- :mod:`.requeue`: the requeue contract, written once: the marker a task leaves, the counts
  and requests it records, and both of the marker's readers (the batch script's teardown and
  the local supervisor).

Training loops use :func:`should_stop`, :func:`signalled` and :func:`stop_now`, imported from
here. Must not: import torch at module level (the collectives live in
:mod:`blocktrain.distributed`), checkpoint (the trainer does) or run Slurm commands (the batch
script does).
"""

from blocktrain.restart.config import (
    DEFAULT_SIGNAL,
    Budget,
    Cause,
    RankFailedError,
    RestartBudgetError,
    RestartConfig,
    budget_allows,
    classify,
)
from blocktrain.restart.crashes import (
    Crash,
    CrashJudgement,
    crash_of,
    keep_crash,
    read_crash,
    repeated_crash_note,
    repeats_previous,
)
from blocktrain.restart.protocol import (
    RestartProtocol,
    active,
    judge_crash,
    leave_if_requeued,
    protocol,
    should_stop,
    signalled,
    stop_now,
)
from blocktrain.restart.requeue import (
    NODE_FAILURE,
    account_node_failures,
    read_counts,
    read_requests,
    request_requeue,
    unrequested,
)

__all__ = [
    "DEFAULT_SIGNAL",
    "NODE_FAILURE",
    "Budget",
    "Cause",
    "Crash",
    "CrashJudgement",
    "RankFailedError",
    "RestartBudgetError",
    "RestartConfig",
    "RestartProtocol",
    "account_node_failures",
    "active",
    "budget_allows",
    "classify",
    "crash_of",
    "judge_crash",
    "keep_crash",
    "leave_if_requeued",
    "protocol",
    "read_counts",
    "read_crash",
    "read_requests",
    "repeated_crash_note",
    "repeats_previous",
    "request_requeue",
    "should_stop",
    "signalled",
    "stop_now",
    "unrequested",
]
