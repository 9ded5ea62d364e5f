"""Submission through submitit: the only module that creates Slurm jobs.

:class:`Scheduler` is what the launcher asks of Slurm: submit a launch's tasks, and say which
jobs are still queued. :class:`SlurmScheduler` is the real one; submitit is imported only when
it submits. Jobs without Slurm have their own scheduler,
:class:`~blocktrain.launch.local.scheduler.LocalScheduler`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from blocktrain.errors import BlocktrainError
from blocktrain.launch.profile import Profile
from blocktrain.launch.slurm import commands
from blocktrain.launch.slurm.batch import BatchPlan
from blocktrain.launch.slurm.commands import QueueEntry
from blocktrain.launch.slurm.watcher import sbatch_watcher
from blocktrain.restart.jobspec import JobSpec
from blocktrain.restart.worker import Worker

if TYPE_CHECKING:
    from submitit import SlurmExecutor


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchJobs:
    """One submission: a task set per run (one job array for several), and their watcher."""

    plan: BatchPlan
    specs: tuple[JobSpec, ...]
    profile: Profile
    """What the plan was made from (a local job reads its resources and policy here)."""
    code_paths: tuple[str, ...]
    """The launch's frozen code, first on each task's import path."""
    project_root: Path
    host_python: str
    """The launcher's Python, which the watcher job runs."""
    watcher_log: Path


@dataclass(frozen=True, kw_only=True, slots=True)
class Submitted:
    job_id: str
    """``123``, or ``120_3`` for element 3 of array job 120."""
    watcher_id: str | None
    """The job that records the run's end if its processes cannot (none for a local job:
    its supervisor does)."""
    executor: str = "slurm"


class Scheduler(Protocol):
    """What the launcher asks of Slurm."""

    def submit(self, jobs: BatchJobs) -> list[Submitted]:
        """Submit every spec of ``jobs``; one :class:`Submitted` per spec, in order."""
        ...

    def queued(self, job_ids: Sequence[str]) -> list[QueueEntry]:
        """The queue entries of these jobs (and of other elements of their arrays)."""
        ...


class SlurmScheduler:
    """The cluster's own Slurm, through submitit, ``sbatch`` and ``squeue``."""

    def submit(self, jobs: BatchJobs) -> list[Submitted]:
        job_ids = submit(jobs.plan, [Worker(spec) for spec in jobs.specs])
        try:
            watcher = sbatch_watcher(
                job_ids[0], jobs.host_python, jobs.project_root,
                [spec.run_id for spec in jobs.specs], log=jobs.watcher_log,
            )  # fmt: skip
        except BaseException:
            # Without its watcher a job could die unrecorded: take the job back too.
            commands.run(["scancel", *sorted({j.split("_", 1)[0] for j in job_ids})])
            raise
        return [Submitted(job_id=job_id, watcher_id=watcher) for job_id in job_ids]

    def queued(self, job_ids: Sequence[str]) -> list[QueueEntry]:
        return commands.squeue(job_ids)


def submit(plan: BatchPlan, workers: Sequence[Worker]) -> list[str]:
    """Submit one job, or one job array for several workers; returns the job ids in order.

    Arrays longer than the cluster's ``MaxArraySize`` are split into several arrays.
    """
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=plan.folder, python=plan.slurm_python)
    except RuntimeError as exc:  # submitit's word for "no srun on PATH"
        raise BlocktrainError(f"cannot submit: {exc}") from None
    executor.update_parameters(**plan.parameters)  # pyright: ignore[reportUnknownMemberType]
    with _stderr_captured() as captured:
        try:
            return _submit_all(executor, workers)
        except BlocktrainError:
            raise
        except Exception as exc:  # noqa: BLE001 - submitit wraps sbatch's failure in several types
            said = captured.read() + "\n" + str(exc)
            lines = [line.strip() for line in said.splitlines() if line.strip()]
            raise BlocktrainError(
                f"sbatch failed: {lines[-1] if lines else type(exc).__name__}"
            ) from None


class _Captured:
    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def read(self) -> str:
        self._file.seek(0)
        return self._file.read().decode(errors="replace")


@contextlib.contextmanager
def _stderr_captured() -> Generator[_Captured]:
    """Holds back what sbatch writes to fd 2 (submitit does not capture it).

    On failure the caller folds it into one error line; otherwise it is passed on unchanged,
    so sbatch's warnings still reach the user.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), 2)
        failed = False
        try:
            yield _Captured(file)
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                sys.stderr.write(_Captured(file).read())


def _submit_all(executor: SlurmExecutor, workers: Sequence[Worker]) -> list[str]:
    if len(workers) == 1:
        return [_job_id(executor.submit(workers[0]))]
    size = max(1, commands.max_array_size() - 1)
    job_ids: list[str] = []
    for start in range(0, len(workers), size):
        with executor.batch():
            jobs = [executor.submit(w) for w in workers[start : start + size]]
        job_ids += [_job_id(j) for j in jobs]
    return job_ids


def _job_id(job: object) -> str:
    job_id = getattr(job, "job_id", None)
    if not isinstance(job_id, str) or not job_id:
        raise BlocktrainError("sbatch gave no job id; see the submitit folder for its output")
    return job_id
