"""The processes of jobs without Slurm: the supervisor that plays ``sbatch`` + ``srun``, its tasks.

    python -m blocktrain.launch.local.supervisor PROJECT_ROOT JOB_ID              # the supervisor
    python -m blocktrain.launch.local.supervisor task PROJECT_ROOT JOB_ID INDEX   # one task

The supervisor runs in its own session, started by
:class:`~blocktrain.launch.local.scheduler.LocalScheduler`. It starts the tasks of each element
(one after another, or ``parallel`` at a time), each with the variables of
:func:`~blocktrain.launch.local.jobstate.task_env`, so that the unchanged
:class:`~blocktrain.restart.worker.Worker`, restart protocol and process group run as under
Slurm. It sends the profile's signal ``signal_lead_s`` before the time limit and kills the tasks
at the limit; it passes its own SIGTERM on to the tasks as a preemption; it ends an element
whose cancel file appears, and the tasks that still run once one has failed (they may wait for
it for good). When the tasks of an element have exited it does what
:func:`~blocktrain.launch.local.jobstate.outcome` says: start them again with
``SLURM_RESTART_COUNT`` + 1 when they left a requeue marker, else record the final state and,
like the watcher job of a Slurm launch, close the run if no process could.

Every decision is :mod:`.jobstate`'s; this module starts, signals and waits for processes
and writes the job's state file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from blocktrain.core.paths import Layout
from blocktrain.distributed import free_port
from blocktrain.launch.local import jobstate
from blocktrain.launch.local.jobfiles import read_job, signal_pids, write_job
from blocktrain.launch.local.jobstate import LocalJob, LocalPlan

POLL_S = 0.2
KILL_GRACE_S = 30.0
"""After SIGTERM (cancel, time limit, preemption), SIGKILL for tasks still there (KillWait)."""
FAILED_TASK_GRACE_S = 30.0
"""After one task failed, how long the others may take to notice before they are ended; none
when it asked for a requeue as it left (the attempt's outcome is settled)."""
START_TIMEOUT_S = 20.0


def start_supervisor(layout: Layout, job_id: str, python: str, log: Path) -> int:
    """Start the supervisor of a written job in its own session; returns its pid once it runs.

    Raises :class:`RuntimeError` (with its log's last line) when it exits before taking over.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [python, "-m", "blocktrain.launch.local.supervisor", str(layout.root), job_id],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=layout.root, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if read_job(layout, job_id).supervisor_pid == process.pid:
            return process.pid
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
    raise RuntimeError(f"the local job supervisor did not start: {lines[-1]} (see {log})")


@dataclass(slots=True)
class _Attempt:
    """The live tasks of one element's attempt, and what was done to them."""

    processes: list[subprocess.Popen[bytes]]
    signal_at: float
    kill_at: float
    signalled: bool = False
    cancelled: bool = False
    timed_out: bool = False
    end_others_at: float | None = None
    """When the tasks still running after one failed are ended (SIGTERM, then SIGKILL)."""
    others_ended: bool = False
    kill_after: float | None = None

    def alive_pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.poll() is None]

    def terminate(self, now: float) -> None:
        signal_pids(self.alive_pids(), "TERM")
        if self.kill_after is None:
            self.kill_after = now + KILL_GRACE_S


@dataclass(slots=True)
class Supervisor:
    layout: Layout
    job: LocalJob
    attempts: dict[int, _Attempt] = field(default_factory=dict[int, _Attempt])
    preempted: bool = False

    @property
    def plan(self) -> LocalPlan:
        return self.job.plan

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        self.job.supervisor_pid = os.getpid()
        self.save()
        try:
            while not self.job.finished:
                self.step(time.time())
                time.sleep(POLL_S)
        except BaseException:
            # Whatever ends the supervisor (a bug, SIGINT) must not leave tasks without one.
            traceback.print_exc()
            self._abandon()
            raise
        return 0

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.preempted = True  # acted on in the loop, not inside the handler

    def save(self) -> None:
        write_job(self.layout, self.job)

    def say(self, text: str) -> None:
        sys.stdout.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} blocktrain: {text}\n")
        sys.stdout.flush()

    def step(self, now: float) -> None:
        if self.preempted:
            self.preempted = False
            self._preempt(now)
        for index, element in enumerate(self.job.elements):
            if element.state == "PENDING" and self._withdrawn(index):
                self.finish(index, "CANCELLED", 0, now)  # as scancel of a pending job
        for index in jobstate.startable(self.job.elements, self.plan.parallel):
            self.start(index, now)
        for index, attempt in list(self.attempts.items()):
            self.watch(index, attempt, now)

    def _preempt(self, now: float) -> None:
        self.say("SIGTERM: preempting the running tasks")
        for attempt in self.attempts.values():
            attempt.terminate(now)  # they checkpoint and ask for a requeue, or are killed

    def _cancel_requested(self, index: int) -> bool:
        keys = {self.job.key(index), self.plan.job_id}
        return any(self.layout.local_cancel(key).exists() for key in keys)

    def _withdrawn(self, index: int) -> bool:
        """Cancelled, or stopped before it first started (slurm-stop of a pending job)."""
        element = self.job.elements[index]
        run = self.layout.run(str(self.plan.specs[index]["run_id"]))
        stopped = element.restart_count == 0 and run.stop_marker.exists()
        return stopped or self._cancel_requested(index)

    def start(self, index: int, now: float) -> None:
        element = self.job.elements[index]
        if self._withdrawn(index):
            self.finish(index, "CANCELLED", 0, now)
            return
        port = free_port()
        processes = [self._spawn(index, rank, element.restart_count, port)
                     for rank in range(self.plan.tasks)]  # fmt: skip
        element.state, element.started, element.ended = "RUNNING", now, None
        element.pids = [p.pid for p in processes]
        signal_at, kill_at = jobstate.deadlines(now, self.plan.time_limit_s, self.plan.lead_s)
        self.attempts[index] = _Attempt(processes, signal_at, kill_at)
        self.say(f"{self.job.key(index)}: started {len(processes)} task(s), "
                 f"restart count {element.restart_count}")  # fmt: skip
        self.save()

    def _spawn(self, index: int, rank: int, restarts: int, port: int) -> subprocess.Popen[bytes]:
        plan = self.plan
        own = jobstate.task_env(plan, index, rank, restarts, port)
        env = jobstate.merged_env(os.environ, own, plan.code_paths)
        output = Path(plan.output)
        output.mkdir(parents=True, exist_ok=True)
        stem = f"{self.job.key(index)}_{rank}_log"  # submitit's names, as srun writes them
        command = [*plan.python, "-u", "-m", "blocktrain.launch.local.supervisor", "task",
                   plan.project_root, plan.job_id, str(index)]  # fmt: skip
        with (output / f"{stem}.out").open("ab") as out, (output / f"{stem}.err").open("ab") as err:
            return subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=plan.project_root,
            )  # fmt: skip

    def watch(self, index: int, attempt: _Attempt, now: float) -> None:
        codes = [p.poll() for p in attempt.processes]
        if all(code is not None for code in codes):
            self.end_attempt(index, attempt, [c for c in codes if c is not None], now)
            return
        if not attempt.cancelled and self._cancel_requested(index):
            self.say(f"{self.job.key(index)}: cancelled")
            attempt.cancelled = True
            attempt.terminate(now)
        if not attempt.signalled and now >= attempt.signal_at:
            self.say(f"{self.job.key(index)}: SIG{self.plan.signal} before the time limit")
            signal_pids(attempt.alive_pids(), self.plan.signal)
            attempt.signalled = True
        if not attempt.timed_out and now >= attempt.kill_at:
            self.say(f"{self.job.key(index)}: time limit reached")
            attempt.timed_out = True
            attempt.terminate(now)
        if attempt.end_others_at is None and any(c not in (None, 0) for c in codes):
            attempt.end_others_at = self._end_others_at(index, codes, now)
        ending = attempt.end_others_at is not None and now >= attempt.end_others_at
        if ending and not attempt.others_ended:
            self.say(f"{self.job.key(index)}: ending the tasks still running")
            attempt.others_ended = True
            attempt.terminate(now)
        if attempt.kill_after is not None and now >= attempt.kill_after:
            signal_pids(attempt.alive_pids(), "KILL")

    def _end_others_at(self, index: int, codes: list[int | None], now: float) -> float:
        """When to end the tasks still running after one failed.

        They may wait for it for good (a collective, the rendezvous). They get
        FAILED_TASK_GRACE_S to notice and record a crash, unless the task asked for a requeue
        as it left (a rank that a SIGTERM reached alone, before its first step): then the
        outcome is settled and they have nothing left to do.
        """
        from blocktrain.restart import requeue

        key = self.job.key(index)
        failed = ", ".join(f"{rank} ({code})" for rank, code in enumerate(codes) if code)
        if requeue.marker(Path(self.plan.requeue_dir), key).exists():
            self.say(f"{key}: task {failed} left and asked for a requeue")
            return now
        self.say(f"{key}: task {failed} failed; the others get {FAILED_TASK_GRACE_S:.0f} s")
        return now + FAILED_TASK_GRACE_S

    def end_attempt(self, index: int, attempt: _Attempt, codes: list[int], now: float) -> None:
        del self.attempts[index]
        key = self.job.key(index)
        # Here, not at the top: slurm-status imports this module and needs none of restart.
        from blocktrain.restart import requeue

        asked = requeue.requeue_asked(Path(self.plan.requeue_dir), key)
        result = jobstate.outcome(
            codes, requeue_asked=asked, cancelled=attempt.cancelled, timed_out=attempt.timed_out
        )
        element = self.job.elements[index]
        element.pids = []
        if result != jobstate.REQUEUE:
            self.finish(index, result, jobstate.exit_code(codes), now)
            return
        self.say(f"requeueing {key}")
        element.restart_count += 1
        element.state = "REQUEUED"
        self.save()
        self.start(index, now)

    def finish(self, index: int, state: str, code: int, now: float) -> None:
        element = self.job.elements[index]
        element.state, element.ended, element.exit_code = state, now, code
        self.save()
        self.say(f"{self.job.key(index)}: {state} (exit code {code})")
        self.layout.local_cancel(self.job.key(index)).unlink(missing_ok=True)
        if self.job.finished:
            self.layout.local_cancel(self.plan.job_id).unlink(missing_ok=True)
        self._close_run(str(self.plan.specs[index]["run_id"]), state)

    def _close_run(self, run_id: str, state: str) -> None:
        """As the watcher job does: a run its tasks left open ends FAILED, or KILLED."""
        from blocktrain.launch.slurm import finalize

        try:
            for closed, status in finalize.finalize(self.layout, [run_id], lambda _: state):
                self.say(f"run {closed}: marked {status}")
        except Exception:  # noqa: BLE001 - the other elements must still run
            traceback.print_exc()

    def _abandon(self) -> None:
        """The supervisor itself failed: end every task, record the elements FAILED."""
        now = time.time()
        for attempt in self.attempts.values():
            signal_pids(attempt.alive_pids(), "KILL")
        for element in self.job.elements:
            if element.state not in jobstate.FINAL:
                element.state, element.ended, element.pids = "FAILED", now, []
        with contextlib.suppress(OSError):
            self.save()


def run_task(layout: Layout, job_id: str, index: int) -> int:
    """One task: the element's :class:`~blocktrain.restart.worker.Worker`, as under ``srun``."""
    from blocktrain.restart.jobspec import JobSpec
    from blocktrain.restart.worker import Worker

    spec = read_job(layout, job_id).plan.specs[index]
    Worker(JobSpec(**spec))()  # pyright: ignore[reportArgumentType]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 4 and args[0] == "task":
        return run_task(Layout(Path(args[1])), args[2], int(args[3]))
    if len(args) != 2:
        sys.stderr.write(
            "usage: python -m blocktrain.launch.local.supervisor PROJECT_ROOT JOB_ID\n"
            "       python -m blocktrain.launch.local.supervisor task PROJECT_ROOT JOB_ID INDEX\n"
        )
        return 2
    layout = Layout(Path(args[0]))
    return Supervisor(layout, read_job(layout, args[1])).run()


if __name__ == "__main__":
    raise SystemExit(main())
