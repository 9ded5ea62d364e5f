"""How a call ended, read from the exception that ended it: the one table of endings.

The tracker turns an :class:`Outcome` into the MLflow run status, the notifier into the Slack
message it posts, so that the two always agree on what happened; :func:`one_line` is how
both, and the restart protocol's crash record, name an exception. Pure: no I/O.

Must not: import torch, mlflow or any blocktrain package but :mod:`blocktrain.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from blocktrain.errors import RequeueRequested, StopRequested, Terminated

Notice = Literal["finished", "requeued", "killed", "crashed"]
"""Which Slack message reports the ending."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One way a call can end, and what the tracker and the notifier make of it."""

    name: str
    mlflow_status: Literal["FINISHED", "SCHEDULED", "KILLED", "FAILED"]
    """The status the MLflow run ends with; SCHEDULED: it continues in a new attempt."""
    notice: Notice
    keeps_traceback: bool = False
    """Whether the traceback tells something worth keeping in the attempt's error log."""


FINISHED = Outcome("finished", "FINISHED", "finished")
"""It returned, or called ``sys.exit(0)``."""
REQUEUED = Outcome("requeued", "SCHEDULED", "requeued")
"""It checkpointed and paused for a new attempt (time limit or preemption)."""
STOPPED = Outcome("stopped", "KILLED", "killed")
"""``slurm-stop``: it checkpointed and ended without a requeue; the run can be relaunched."""
KILLED = Outcome("killed", "KILLED", "killed")
"""SIGTERM outside the restart protocol (scancel, node shutdown) or Ctrl-C."""
EXITED = Outcome("exited", "FAILED", "crashed")
"""``sys.exit`` with a non-zero status: a failure whose traceback only shows the exit call."""
CRASHED = Outcome("crashed", "FAILED", "crashed", keeps_traceback=True)
"""Any other exception."""


def classify(error: BaseException | None) -> Outcome:
    """The outcome of a call that raised ``error``, or returned when it is None."""
    match error:
        case None:
            return FINISHED
        case SystemExit(code=None | 0):
            return FINISHED
        case SystemExit():
            return EXITED
        case RequeueRequested():
            return REQUEUED
        case StopRequested():
            return STOPPED
        case Terminated() | KeyboardInterrupt():
            return KILLED
        case _:
            return CRASHED


def one_line(error: BaseException) -> str:
    """``FileNotFoundError: [Errno 2] No such file or directory: 'x'``: the type and the
    message's first line."""
    message = str(error).strip()
    first = message.splitlines()[0] if message else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
