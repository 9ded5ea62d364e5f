"""As many torch threads as the task has CPUs: what the worker sets before the entry runs.

By default torch starts one intra-op thread per core of the node, and the ranks sharing a node
then fight over the cores: outside Slurm, 10 steps of two CPU ranks took 8.0 s instead of
1.24 s with one thread per rank. :func:`allocated_threads` is a pure function of an
environment; :func:`use_allocated_cpus` applies it to this process.

Must not: import torch at module level (the worker's module is imported by the launcher).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def allocated_threads(env: Mapping[str, str], cpus: int) -> int | None:
    """How many threads torch runs an operation on in one task of a job.

    The CPUs Slurm gave the task (``SLURM_CPUS_PER_TASK``, which the local executor sets from
    the profile's ``cpus_per_task`` too); without it, the ``cpus`` this process may run on,
    shared among the ranks of its node (``LOCAL_WORLD_SIZE``, else ``SLURM_NTASKS_PER_NODE``,
    else one), at least one. None when ``OMP_NUM_THREADS`` is set: torch follows it already,
    and it is the user's choice (a profile's ``env``).
    """
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    given = _count(env, "SLURM_CPUS_PER_TASK")
    if given is not None:
        return given
    sharing = _count(env, "LOCAL_WORLD_SIZE") or _count(env, "SLURM_NTASKS_PER_NODE") or 1
    return max(1, cpus // sharing)


def use_allocated_cpus() -> int | None:
    """Set torch's intra-op threads to :func:`allocated_threads` of this process.

    Returns the count set; None when ``OMP_NUM_THREADS`` decides.
    """
    threads = allocated_threads(os.environ, usable_cpus())
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return threads


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity, which Slurm's cgroups narrow."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _count(env: Mapping[str, str], name: str) -> int | None:
    """A positive integer variable; None when it is unset or anything else."""
    value = env.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
