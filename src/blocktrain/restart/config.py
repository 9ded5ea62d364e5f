"""What the launcher tells each task about restarts, and the pure rules that decide them.

The ``BLOCKTRAIN_RESTART_*`` variables, the time limit and the run's folders become a
:class:`RestartConfig`; :func:`classify` says why an attempt stops (a ``slurm-stop``, its time
limit or a preemption) and :func:`budget_allows` whether the cause's budget allows another
attempt. Pure: no signals, no files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from blocktrain.core import envvars
from blocktrain.core.jobenv import job_context
from blocktrain.errors import BlocktrainError

Cause = Literal["timeout", "preemption", "stop"]
Budget = int | Literal["unlimited"]
# Not USR1: some NCCL versions catch it to dump their state, hiding it from the job (see
# docs/restarts.md). A profile's ``signal`` overrides this.
DEFAULT_SIGNAL = "USR2"
# A signal this close to (lead time before) the time limit counts as the time limit.
_TIMEOUT_MARGIN_S = 60.0


class RestartBudgetError(BlocktrainError):
    """The job would need another attempt for a cause whose restart budget is spent."""


class RankFailedError(BlocktrainError):
    """Another rank ended this attempt with a failure that is not requeued (the crash-loop
    guard, or a spent crash budget); the message is the run's one line."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RestartConfig:
    """What the launcher tells each task: the ``BLOCKTRAIN_RESTART_*`` variables, the time
    limit, the run's folder and the requeue markers' folder."""

    signal: str = DEFAULT_SIGNAL
    time_limit_s: float | None = None
    lead_s: float = 120.0
    run_dir: Path
    marker_dir: Path
    job_key: str
    restart_count: int = 0
    """``SLURM_RESTART_COUNT``: how many times Slurm requeued this job before this attempt."""
    budgets: Mapping[str, Budget] = field(default_factory=dict[str, Budget])

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> RestartConfig | None:
        """None when the process was not started by ``slurm-launch``."""
        run_dir = envvars.RUN_DIR.get(env)
        marker_dir = envvars.REQUEUE_DIR.get(env)
        if not run_dir or not marker_dir:
            return None
        array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        job_key = (
            f"{array_job}_{array_task}"
            if array_job and array_task
            else env.get("SLURM_JOB_ID", "local")
        )
        limit = envvars.TIME_LIMIT_S.get(env)
        return cls(
            signal=env.get(envvars.RESTART_SIGNAL.name, DEFAULT_SIGNAL),
            time_limit_s=float(limit) if limit else None,
            lead_s=float(env.get(envvars.RESTART_LEAD_S.name, "120")),
            run_dir=Path(run_dir),
            marker_dir=Path(marker_dir),
            job_key=job_key,
            restart_count=job_context(env).restart_count,
            budgets=json.loads(env.get(envvars.RESTART_BUDGETS.name, "{}")),
        )


def classify(
    signal_name: str | None, elapsed_s: float, config: RestartConfig, stop_marker: bool
) -> Cause:
    """Why the job must stop: a stop request, its time limit, or a preemption."""
    if stop_marker:
        return "stop"
    limit = config.time_limit_s
    near_limit = limit is not None and elapsed_s >= limit - config.lead_s - _TIMEOUT_MARGIN_S
    return "timeout" if signal_name == config.signal and near_limit else "preemption"


def budget_allows(budgets: Mapping[str, Budget], cause: str, spent: Mapping[str, int]) -> bool:
    budget = budgets.get(cause, "unlimited")
    return budget == "unlimited" or spent.get(cause, 0) < budget
