"""The worker gives torch one thread per CPU the task was given, before the entry runs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from blocktrain import distributed
from blocktrain.restart.cpus import allocated_threads, use_allocated_cpus
from blocktrain.restart.jobspec import JobSpec
from blocktrain.restart.worker import Worker

RANK_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_NODEID",
    "SLURM_NTASKS_PER_NODE", "SLURM_CPUS_PER_TASK", "SLURM_RESTART_COUNT", "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "OMP_NUM_THREADS",
)  # fmt: skip


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A task's environment without the surrounding job's, and torch's threads put back."""
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("env", "cpus", "expected"),
    [
        ({"SLURM_CPUS_PER_TASK": "4"}, 64, 4),  # Slurm's --cpus-per-task, or the local executor's
        ({"SLURM_CPUS_PER_TASK": "4", "LOCAL_WORLD_SIZE": "2"}, 64, 4),
        ({"LOCAL_WORLD_SIZE": "4"}, 16, 4),  # torchrun: the node's CPUs shared by its ranks
        ({"SLURM_NTASKS_PER_NODE": "3"}, 16, 5),
        ({"LOCAL_WORLD_SIZE": "8"}, 2, 1),  # never fewer than one
        ({}, 6, 6),  # one process: all the CPUs it may run on
        ({"SLURM_CPUS_PER_TASK": "x", "LOCAL_WORLD_SIZE": "0"}, 6, 6),  # nonsense counts nothing
        ({"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "8"}, 64, None),  # the user's choice
    ],
)
def test_the_threads_come_from_the_allocation(
    env: dict[str, str], cpus: int, expected: int | None
) -> None:
    assert allocated_threads(env, cpus) == expected


@pytest.mark.usefixtures("threads")
def test_use_allocated_cpus_sets_torchs_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert use_allocated_cpus() == 3
    assert torch.get_num_threads() == 3
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert use_allocated_cpus() is None
    assert torch.get_num_threads() == 2  # left alone


@pytest.mark.usefixtures("threads")
def test_the_worker_sets_them_for_every_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task of a job with two CPUs per task runs its entry function on two torch threads."""
    code = tmp_path / "code"
    (code / "src").mkdir(parents=True)
    (code / "src" / "cpus_probe_entry.py").write_text(
        "import torch\n\n\n"
        "def probe(*, into: str) -> None:\n"
        "    with open(into, 'w') as file:\n"
        "        file.write(str(torch.get_num_threads()))\n"
    )
    out = tmp_path / "threads.txt"
    spec = JobSpec(
        run_id="r1",
        entry="cpus_probe_entry:probe",
        args={"into": str(out)},
        code_dir=str(code),
        run_dir=str(tmp_path / "run"),
        log_dir=str(tmp_path / "logs"),
        requeue_dir=str(tmp_path / "requeue"),
    )
    (tmp_path / "run").mkdir()
    for name, value in spec.environment().items():  # set here so that they are put back
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(distributed, "exit_without_finalizing", lambda: None)
    torch.set_num_threads(1)
    Worker(spec)()
    assert out.read_text() == "2"
