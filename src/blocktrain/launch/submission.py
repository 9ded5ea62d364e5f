"""Submission through submitit: the only module that creates Slurm jobs."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Generator, Sequence
from typing import IO, TYPE_CHECKING

from blocktrain.errors import BlocktrainError
from blocktrain.launch import slurmcmd
from blocktrain.launch.batch import BatchPlan
from blocktrain.launch.worker import Worker

if TYPE_CHECKING:
    from submitit import SlurmExecutor


def submit(plan: BatchPlan, workers: Sequence[Worker]) -> list[str]:
    """Submit one job, or one job array for several workers; returns the job ids in order.

    Arrays longer than the cluster's ``MaxArraySize`` are split into several arrays.
    """
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=plan.folder, python=plan.python)
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
    size = max(1, slurmcmd.max_array_size() - 1)
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
