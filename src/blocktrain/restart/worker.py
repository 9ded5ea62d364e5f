"""The callable every task of a launched job runs (pickled by submitit, executed in the task).

It restores the run's environment and code, installs the restart protocol, gives torch as
many threads as the task has CPUs (:mod:`blocktrain.restart.cpus`), sets up torch.distributed
from Slurm's variables, and calls the entry function with the run's recorded arguments. When
it crashes, on any rank, the attempt's first crash is recorded and a new attempt asked for
within the crash budget, unless the crash repeats the previous attempt's before any step (see
:func:`blocktrain.restart.judge_crash`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blocktrain.core import envvars
from blocktrain.core.atomic import write_text_atomic
from blocktrain.core.paths import RunFiles, import_paths
from blocktrain.entry import load_entry, validate
from blocktrain.entry.argfiles import ArgSet
from blocktrain.errors import BlocktrainError, RequeueRequested, StopRequested
from blocktrain.restart import requeue
from blocktrain.restart.cpus import use_allocated_cpus
from blocktrain.restart.jobspec import JobSpec

if TYPE_CHECKING:
    from blocktrain.restart import RestartConfig

LEFT_EARLY_STATUS = 128 + signal.SIGTERM
"""The exit status of a task that left its attempt before the other ranks agreed (what the
SIGTERM's default action would have given): the launcher ends the ranks still running."""


@dataclass(frozen=True, slots=True)
class Worker:
    spec: JobSpec

    def __call__(self) -> None:
        from blocktrain import distributed, restart
        from blocktrain.core.jobenv import job_context

        os.environ.update(self.spec.environment())
        run = RunFiles(Path(self.spec.run_dir))
        context = job_context(os.environ)
        if run.finished_marker.exists() and context.restart_count > 0:
            sys.stderr.write(f"blocktrain: run {self.spec.run_id} already finished; not rerun\n")
            return
        config = restart.RestartConfig.from_environ(os.environ)
        if config is None:  # the spec's environment sets both folders; this guards edits to it
            raise BlocktrainError(
                f"{envvars.RUN_DIR.name} and {envvars.REQUEUE_DIR.name} must be set"
            )
        if context.is_rank_zero and requeue.asked_cause(config) is None:
            # A marker left by an attempt that Slurm itself requeued (scontrol requeue,
            # preemption) must not requeue this one when it ends; one that another rank of
            # this attempt left already (it was signalled first) must stay.
            requeue.marker(config.marker_dir, config.job_key).unlink(missing_ok=True)
        if context.is_rank_zero:
            requeue.remove_earlier_exits(config)
        # The protocol comes first: importing the user's module may take a minute (torch,
        # Lightning), and a time-limit signal in that time must be blocktrain's to act on, not
        # submitit's (which would requeue outside the run's budgets) nor the default (death).
        with restart.protocol(config) as state:
            try:
                self._run(config, context.rank, context.world_size, run)
            except (RequeueRequested, StopRequested) as left:
                # The marker (or its absence) tells the batch script. A rank that left alone
                # (a SIGTERM before its first step) says so by its exit status: the other ranks
                # may wait for it where only the launcher can end them.
                _say_how_the_attempt_left(left, context.is_rank_zero)
                alone = state.left_early and context.world_size > 1
                distributed.exit_without_finalizing(LEFT_EARLY_STATUS if alone else 0)
                return
        if context.is_rank_zero:
            run.finished_marker.touch()
        distributed.exit_without_finalizing()

    def _run(self, config: RestartConfig, rank: int, world_size: int, run: RunFiles) -> None:
        from blocktrain import distributed, restart

        for path in reversed(import_paths(Path(self.spec.code_dir))):
            sys.path.insert(0, path)
        func = load_entry(self.spec.entry)
        kwargs = validate(func, ArgSet(values=dict(self.spec.args)))
        if world_size > 1 and "MASTER_PORT" not in os.environ:
            key = f"{config.job_key}-{config.restart_count}"
            port = agree_port(run.rendezvous, key, rank, poll=restart.leave_if_requeued)
            os.environ["MASTER_PORT"] = str(port)
        use_allocated_cpus()
        # Waiting for the others, a rank gives up once one of them left the attempt for good.
        with distributed.process_group(while_meeting=restart.leave_if_requeued):
            try:
                func(**kwargs)
            except (RequeueRequested, StopRequested):
                # Checkpointed; the marker (or its absence) tells the batch script. Ends here,
                # inside the process group (see distributed.exit_without_finalizing).
                distributed.exit_without_finalizing()
                raise
            except Exception as exc:
                # Every rank: the one that crashed may be any, and the others then learn from
                # the record it leaves how the attempt ended (blocktrain.restart.endings).
                _requeue_after_crash(config, exc)
                # Under srun only: a local task has no wrapper to write the exit status waited for.
                if rank != 0 and world_size > 1 and not envvars.EXECUTOR.get(os.environ):
                    let_rank_zero_report(config)
                raise


def _say_how_the_attempt_left(left: BaseException, rank_zero: bool) -> None:
    """Our line, instead of submitit's: this call returns normally, and submitit would log "Job
    completed successfully" for an attempt that only paused."""
    logging.getLogger("submitit").setLevel(logging.WARNING)
    if rank_zero:
        what = "requeued" if isinstance(left, RequeueRequested) else "stopped (slurm-stop)"
        sys.stderr.write(f"blocktrain: this attempt ends here; the run is {what}\n")


def agree_port(
    folder: Path,
    key: str,
    rank: int,
    timeout_s: float = 300.0,
    poll: Callable[[], object] | None = None,
) -> int:
    """A free port chosen by rank 0 and shared through the run folder (a shared file system).

    A port derived from the job id alone collides when two jobs with related ids share a node;
    rank 0 asks the kernel for a free one instead and the other ranks read it, calling ``poll``
    while they wait (it may raise to give up).
    """
    path = folder / f"{key}.port"
    if rank == 0:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = int(probe.getsockname()[1])
        write_text_atomic(path, str(port))
        return port
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text())
        if poll is not None:
            poll()
        time.sleep(0.1)
    raise BlocktrainError(f"rank 0 published no rendezvous port in {path} within {timeout_s:.0f} s")


REPORT_GRACE_S = 60.0
"""How long a crashed rank other than 0 waits, at most, for rank 0 to report the attempt."""


def let_rank_zero_report(config: RestartConfig, grace_s: float = REPORT_GRACE_S) -> None:
    """Wait, before this crashed rank exits, until rank 0 has ended (or ``grace_s`` passed).

    Rank 0 alone reports an attempt (Slack, MLflow), and srun ends it as soon as this task
    exits with its crash: rank 0, often still opening the MLflow run while another rank already
    crashed, would leave without a word. So this rank leaves the process group first, which makes
    rank 0's next collective fail at once; rank 0 then crashes, judges its crash as this one's
    (the record is in place) and reports it, and its exit status, which its task's wrapper
    writes, ends the wait.
    """
    from blocktrain import distributed

    distributed.leave_group()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and 0 not in requeue.task_exits(config):
        time.sleep(0.2)


def _requeue_after_crash(config: RestartConfig, error: Exception) -> None:
    """Record the crash and requeue within the crash budget, unless the crash repeats the
    previous attempt's (done by the first judgement of ``error``, which the notifier may have
    asked for already); the reason it is not requeued goes to the task's log."""
    from blocktrain import restart

    judgement = restart.judge_crash(error)
    if judgement is not None and judgement.note is not None:
        sys.stderr.write(f"blocktrain: {judgement.note}\n")
