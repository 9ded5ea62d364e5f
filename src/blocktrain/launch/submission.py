"""Submission through submitit: the only module that creates Slurm jobs."""

from __future__ import annotations

from collections.abc import Sequence

from blocktrain.errors import BlocktrainError
from blocktrain.launch.batch import BatchPlan
from blocktrain.launch.worker import Worker


def submit(plan: BatchPlan, workers: Sequence[Worker]) -> list[str]:
    """Submit one job, or one job array for several workers; returns the job ids in order.

    Arrays longer than the cluster's ``MaxArraySize`` are split into several arrays.
    """
    import submitit

    from blocktrain.launch import slurmcmd

    executor = submitit.SlurmExecutor(folder=plan.folder, python=plan.python)
    executor.update_parameters(**plan.parameters)  # pyright: ignore[reportUnknownMemberType]
    if len(workers) == 1:
        return [_job_id(executor.submit(workers[0]))]  # pyright: ignore[reportUnknownMemberType,reportUnknownArgumentType]
    size = max(1, slurmcmd.max_array_size() - 1)
    job_ids: list[str] = []
    for start in range(0, len(workers), size):
        with executor.batch():  # pyright: ignore[reportUnknownMemberType]
            jobs = [executor.submit(w) for w in workers[start : start + size]]  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
        job_ids += [_job_id(j) for j in jobs]  # pyright: ignore[reportUnknownArgumentType,reportUnknownVariableType]
    return job_ids


def _job_id(job: object) -> str:
    job_id = getattr(job, "job_id", None)
    if not isinstance(job_id, str) or not job_id:
        raise BlocktrainError("sbatch gave no job id; see the submitit folder for its output")
    return job_id
