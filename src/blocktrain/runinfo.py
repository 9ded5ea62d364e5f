"""Who and where this process is: rank, Slurm job, attempt number, read from an environment.

Pure functions of a mapping so that they are tested without touching ``os.environ``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class JobContext:
    """The identity of one process of one attempt of a job."""

    host: str
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    job_id: str | None = None
    """``123`` for a plain job, ``120_3`` for element 3 of array job 120."""
    array_index: int | None = None
    restart_count: int = 0
    attempt: int = 1
    run_id: str | None = None

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def _int(env: Mapping[str, str], *names: str, default: int) -> int:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                continue
    return default


def job_context(env: Mapping[str, str], *, host: str | None = None) -> JobContext:
    """Read rank, job and attempt from torch-style or Slurm variables (torch-style first).

    The attempt number is ``BLOCKTRAIN_ATTEMPT`` when set; otherwise the attempts a relaunch
    already had (``BLOCKTRAIN_ATTEMPT_BASE``) plus Slurm's requeue count, plus one, so that every
    rank of an attempt derives the same number without talking to the others.
    """
    restart_count = _int(env, "SLURM_RESTART_COUNT", default=0)
    attempt = _int(env, "BLOCKTRAIN_ATTEMPT", default=0)
    if attempt <= 0:
        attempt = _int(env, "BLOCKTRAIN_ATTEMPT_BASE", default=0) + restart_count + 1
    array_job = env.get("SLURM_ARRAY_JOB_ID")
    array_task = env.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        job_id: str | None = f"{array_job}_{array_task}"
        array_index: int | None = _int(env, "SLURM_ARRAY_TASK_ID", default=0)
    else:
        job_id = env.get("SLURM_JOB_ID") or None
        array_index = None
    return JobContext(
        host=host or env.get("SLURMD_NODENAME") or socket.gethostname(),
        rank=_int(env, "RANK", "SLURM_PROCID", default=0),
        local_rank=_int(env, "LOCAL_RANK", "SLURM_LOCALID", default=0),
        world_size=_int(env, "WORLD_SIZE", "SLURM_NTASKS", default=1),
        job_id=job_id,
        array_index=array_index,
        restart_count=restart_count,
        attempt=attempt,
        run_id=env.get("BLOCKTRAIN_RUN_ID") or None,
    )
