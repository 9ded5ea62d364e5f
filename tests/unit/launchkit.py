"""The launch flow without a cluster, shared by its tests: a project with an entry module, and
a scheduler that records what Slurm would be asked (what Slurm makes of a submission is tested
on the local cluster, tests/integration/slurm)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocktrain.errors import BlocktrainError
from blocktrain.launch.launcher import LaunchRequest, LaunchResult, launch
from blocktrain.launch.slurm.commands import QueueEntry
from blocktrain.launch.slurm.submit import BatchJobs, Submitted

MODULE = "launcher_entry"
ENTRY_SOURCE = '''
def train(*, steps: int = 5, lr: float = 0.1) -> None:
    """Train a little.

    Args:
        steps: optimizer steps
        lr: learning rate
    """
'''
PROFILE = "partition: debug\nnodes: 1\ntasks_per_node: 2\ntime: 30\n"


@dataclass
class RecordingScheduler:
    """Slurm's part, recorded: each submission gets the next job id (an array's elements
    ``N_0``, ``N_1``, ...); ``queue`` is what squeue would list; ``refusal`` fails submissions."""

    queue: list[QueueEntry] = field(default_factory=list[QueueEntry])
    refusal: BlocktrainError | None = None
    submitted: list[BatchJobs] = field(default_factory=list[BatchJobs])
    asked: list[list[str]] = field(default_factory=list[list[str]])

    def submit(self, jobs: BatchJobs) -> list[Submitted]:
        self.submitted.append(jobs)
        if self.refusal is not None:
            raise self.refusal
        job = 100 + len(self.submitted)
        ids = [str(job)] if len(jobs.specs) == 1 else [f"{job}_{i}" for i in range(len(jobs.specs))]
        return [Submitted(job_id=i, watcher_id=str(job + 50)) for i in ids]

    def queued(self, job_ids: Sequence[str]) -> list[QueueEntry]:
        self.asked.append(list(job_ids))
        return list(self.queue)


def run(
    root: Path, scheduler: RecordingScheduler, entry: str = "train", **request: Any
) -> LaunchResult:
    return launch(
        LaunchRequest(entry=entry, **request),
        root=root,
        scheduler=scheduler,
        environ={},  # the project's embedded store; the experiment is named after the folder
    )
