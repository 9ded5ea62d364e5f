"""Who and where this process is: rank, world size, Slurm job, attempt, read from an environment.

The one reader of these variables (as submitit's ``JobEnvironment``): every module that asks
"which rank am I, how many are we" asks :func:`ranks` or :func:`job_context`. Pure functions of a
mapping, so that they are tested without touching ``os.environ``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from blocktrain.core import envvars


@dataclass(frozen=True, kw_only=True, slots=True)
class JobContext:
    """The identity of one process of one attempt of a job."""

    host: str
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    node_rank: int = 0
    """Which of the job's nodes this process runs on, from 0 (``SLURM_NODEID``)."""
    job_id: str | None = None
    """``123`` for a plain job, ``120_3`` for element 3 of array job 120."""
    array_index: int | None = None
    restart_count: int = 0
    attempt: int = 1
    run_id: str | None = None

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True, slots=True)
class Ranks:
    rank: int
    local_rank: int
    world_size: int
    node_rank: int = 0
    """The index of this process's node among the job's (step's) nodes."""

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def ranks(env: Mapping[str, str]) -> Ranks:
    """Rank, local rank and world size: torch-style variables, else Slurm's, else one process.

    Torch-style variables (``RANK``/``WORLD_SIZE``, set by torchrun and by blocktrain's worker
    once it has set up the process group) win as a set: when either is present, Slurm's are
    used only for a missing ``LOCAL_RANK`` or ``GROUP_RANK``. Under ``srun`` the world size is
    ``SLURM_NTASKS``, else ``SLURM_STEP_NUM_TASKS`` (set inside a step even when the job's count
    is not). The local rank counts the tasks of one node (``SLURM_LOCALID``), the node rank the
    nodes (``GROUP_RANK`` as torchrun sets it, else ``SLURM_NODEID``). A value that is not an
    integer is an error naming the variable, never a silent rank 0.
    """
    node_rank = env_int(env, "GROUP_RANK", env_int(env, "SLURM_NODEID", 0))
    if "RANK" in env or "WORLD_SIZE" in env:
        return Ranks(
            rank=env_int(env, "RANK", 0),
            local_rank=env_int(env, "LOCAL_RANK", env_int(env, "SLURM_LOCALID", 0)),
            world_size=env_int(env, "WORLD_SIZE", 1),
            node_rank=node_rank,
        )
    if "SLURM_PROCID" in env:
        world = env_int(env, "SLURM_NTASKS", env_int(env, "SLURM_STEP_NUM_TASKS", 1))
        return Ranks(
            rank=env_int(env, "SLURM_PROCID", 0),
            local_rank=env_int(env, "SLURM_LOCALID", 0),
            world_size=world,
            node_rank=node_rank,
        )
    return Ranks(rank=0, local_rank=0, world_size=1)


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """``env[name]`` as an integer, ``default`` when unset or empty; anything else is an error."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


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
    """Read rank (:func:`ranks`), job and attempt from torch-style or Slurm variables.

    The attempt number is ``BLOCKTRAIN_ATTEMPT`` when set; otherwise the attempts a relaunch
    already had (``BLOCKTRAIN_ATTEMPT_BASE``) plus Slurm's requeue count, plus one, so that every
    rank of an attempt derives the same number without talking to the others.
    """
    restart_count = _int(env, "SLURM_RESTART_COUNT", default=0)
    attempt = _int(env, envvars.ATTEMPT.name, default=0)
    if attempt <= 0:
        attempt = _int(env, envvars.ATTEMPT_BASE.name, default=0) + restart_count + 1
    array_job = env.get("SLURM_ARRAY_JOB_ID")
    array_task = env.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        job_id: str | None = f"{array_job}_{array_task}"
        array_index: int | None = _int(env, "SLURM_ARRAY_TASK_ID", default=0)
    else:
        job_id = env.get("SLURM_JOB_ID") or None
        array_index = None
    where = ranks(env)
    return JobContext(
        host=host or env.get("SLURMD_NODENAME") or socket.gethostname(),
        rank=where.rank,
        local_rank=where.local_rank,
        world_size=where.world_size,
        node_rank=where.node_rank,
        job_id=job_id,
        array_index=array_index,
        restart_count=restart_count,
        attempt=attempt,
        run_id=envvars.RUN_ID.get(env),
    )
