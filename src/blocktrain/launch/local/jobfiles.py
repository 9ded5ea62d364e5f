"""A local job's state file and its processes: read, write, alive, signal.

Apart from :mod:`.supervisor` so that the commands that only look at jobs (``slurm-status``)
import neither the supervisor nor what it runs tasks with.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence

from blocktrain.core.atomic import write_text_atomic
from blocktrain.core.paths import Layout
from blocktrain.launch.local.jobstate import LocalJob

__all__ = ["alive", "read_job", "signal_pids", "write_job"]


def read_job(layout: Layout, job_id: str) -> LocalJob:
    return LocalJob.from_json(layout.local_job(job_id).read_text())


def write_job(layout: Layout, job: LocalJob) -> None:
    write_text_atomic(layout.local_job(job.plan.job_id), job.to_json())


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_pids(pids: Sequence[int], signal_name: str) -> None:
    """Send ``SIG<signal_name>`` to each process still there (as ``scancel --signal``)."""
    number = signal.Signals[f"SIG{signal_name.removeprefix('SIG')}"]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, number)
