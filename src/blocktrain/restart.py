"""The restart protocol inside a launched job's tasks: why an attempt stops, and how it leaves.

Slurm signals the tasks ``signal_lead_s`` seconds before the time limit with the profile's
``signal`` (USR2 by default), and sends SIGTERM on preemption; ``slurm-stop`` leaves a stop
marker in the run's folder and sends the profile's signal. The handler records which signal
came and returns, except for a SIGTERM that arrives before the code ever polled: nothing was
trained since the last checkpoint, so the attempt leaves at once as a preemption.

The code polls at step boundaries: :func:`signalled` asks this rank alone (the trainer gets the
ranks to agree through its own exchange, a step later), :func:`should_stop` asks all ranks at
once. Once they agree, all ranks checkpoint together and call :func:`stop_now`, which raises:

- :class:`~blocktrain.errors.RequeueRequested` when the budget of the cause (time limit or
  preemption) allows another attempt; rank 0 spends one unit in the run's ``restarts.json``
  and leaves a marker that the batch script (outside any container) turns into
  ``scontrol requeue``;
- :class:`~blocktrain.errors.StopRequested` for ``slurm-stop`` (the run ends KILLED and can be
  relaunched);
- :class:`RestartBudgetError` when the cause's budget is spent (the run ends FAILED).

The worker asks for a new attempt after a crash through :func:`request_requeue` too, within
the ``crash`` budget, unless the crash repeats the previous attempt's before either reached a
step boundary (:func:`judge_crash`): a deterministic error, such as a missing data path, would
only crash again until the budget is spent.

A node failure leaves no process to ask for anything: Slurm requeues the job itself (NODE_FAIL)
and kills the surviving tasks. So every requeue a job asks for is written down with its Slurm
restart count (``requeue-requests.json``), and when an attempt starts, rank 0 counts each
earlier attempt of the job that asked for none as a ``node_failure`` in ``restarts.json``
(:func:`account_node_failures`). Slurm requeues a requeueable job on its own only when a node
fails or a launch on a node fails; a task killed before it installed the protocol (a SIGTERM
in the first seconds of an attempt) counts so too. There is no budget for node failures: the
job cannot refuse Slurm's requeue, and the count is what the run reports.

Must not: import torch (the collective lives in :mod:`blocktrain.distributed`), or run Slurm
commands: the requeue itself is the batch script's.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import signal
import sys
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal, NoReturn

from blocktrain import distributed
from blocktrain.core.files import write_text_atomic
from blocktrain.core.jobenv import job_context
from blocktrain.core.outcome import one_line
from blocktrain.core.paths import RunFiles
from blocktrain.errors import BlocktrainError, RequeueRequested, StopRequested, Terminated

Cause = Literal["timeout", "preemption", "stop"]
Budget = int | Literal["unlimited"]
NODE_FAILURE = "node_failure"
"""The cause counted for an attempt that Slurm requeued without being asked (see above)."""
# Not USR1: some NCCL versions catch it to dump their state, hiding it from the job (see
# docs/restarts.md). A profile's ``signal`` overrides this.
DEFAULT_SIGNAL = "USR2"
# A signal this close to (lead time before) the time limit counts as the time limit.
_TIMEOUT_MARGIN_S = 60.0
_current: contextvars.ContextVar[RestartProtocol | None] = contextvars.ContextVar(
    "blocktrain_restart", default=None
)


class RestartBudgetError(BlocktrainError):
    """The job would need another attempt for a cause whose restart budget is spent."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RestartConfig:
    """What the launcher tells each task: the ``BLOCKTRAIN_RESTART_*`` variables, the time
    limit, the run's folder and the requeue markers' folder."""

    signal: str = DEFAULT_SIGNAL
    time_limit_s: float | None = None
    lead_s: float = 120.0
    run_dir: Path
    marker_dir: Path
    job_key: str
    restart_count: int = 0
    """``SLURM_RESTART_COUNT``: how many times Slurm requeued this job before this attempt."""
    budgets: Mapping[str, Budget] = field(default_factory=dict[str, Budget])

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> RestartConfig | None:
        """None when the process was not started by ``slurm-launch``."""
        run_dir = env.get("BLOCKTRAIN_RUN_DIR")
        marker_dir = env.get("BLOCKTRAIN_REQUEUE_DIR")
        if not run_dir or not marker_dir:
            return None
        array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        job_key = (
            f"{array_job}_{array_task}"
            if array_job and array_task
            else env.get("SLURM_JOB_ID", "local")
        )
        limit = env.get("BLOCKTRAIN_TIME_LIMIT_S")
        return cls(
            signal=env.get("BLOCKTRAIN_RESTART_SIGNAL", DEFAULT_SIGNAL),
            time_limit_s=float(limit) if limit else None,
            lead_s=float(env.get("BLOCKTRAIN_RESTART_LEAD_S", "120")),
            run_dir=Path(run_dir),
            marker_dir=Path(marker_dir),
            job_key=job_key,
            restart_count=job_context(env).restart_count,
            budgets=json.loads(env.get("BLOCKTRAIN_RESTART_BUDGETS", "{}")),
        )


def classify(
    signal_name: str | None, elapsed_s: float, config: RestartConfig, stop_marker: bool
) -> Cause:
    """Why the job must stop: a stop request, its time limit, or a preemption."""
    if stop_marker:
        return "stop"
    limit = config.time_limit_s
    near_limit = limit is not None and elapsed_s >= limit - config.lead_s - _TIMEOUT_MARGIN_S
    return "timeout" if signal_name == config.signal and near_limit else "preemption"


def budget_allows(budgets: Mapping[str, Budget], cause: str, spent: Mapping[str, int]) -> bool:
    budget = budgets.get(cause, "unlimited")
    return budget == "unlimited" or spent.get(cause, 0) < budget


@dataclass(frozen=True, kw_only=True, slots=True)
class Crash:
    """How one attempt crashed: what rank 0 keeps in the run's ``last-crash.json``."""

    kind: str
    """The exception's type, with its module: ``builtins.FileNotFoundError``."""
    message: str
    summary: str
    """One line for people: ``FileNotFoundError: [Errno 2] No such file or directory: 'x'``."""
    before_first_step: bool
    """The attempt crashed before its code reached a step boundary."""
    job_key: str
    restart_count: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "message": self.message,
                "summary": self.summary,
                "before_first_step": self.before_first_step,
                "job_key": self.job_key,
                "restart_count": self.restart_count,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Crash | None:
        """None for a torn or foreign file: the next crash is then requeued as usual."""
        try:
            raw = json.loads(text)
            return cls(
                kind=str(raw["kind"]),
                message=str(raw["message"]),
                summary=str(raw["summary"]),
                before_first_step=bool(raw["before_first_step"]),
                job_key=str(raw["job_key"]),
                restart_count=int(raw["restart_count"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


def crash_of(error: BaseException, *, before_first_step: bool, config: RestartConfig) -> Crash:
    """The record of this attempt's crash with ``error``."""
    kind = type(error)
    return Crash(
        kind=f"{kind.__module__}.{kind.__qualname__}",
        message=str(error),
        summary=one_line(error),
        before_first_step=before_first_step,
        job_key=config.job_key,
        restart_count=config.restart_count,
    )


def repeats_previous(previous: Crash | None, crash: Crash) -> bool:
    """Whether ``crash`` repeats the previous attempt's: the same exception type and message,
    both before their first step boundary, in consecutive attempts of the same job.

    Such a crash is deterministic (a missing path, a bad argument): another attempt would
    crash the same way. A crash after progress may be transient and keeps its budget; a
    relaunch (a new job) gets a new attempt even if it crashes as the last one did.
    """
    return (
        previous is not None
        and crash.before_first_step
        and previous.before_first_step
        and previous.job_key == crash.job_key
        and previous.restart_count == crash.restart_count - 1
        and previous.kind == crash.kind
        and previous.message == crash.message
    )


def repeated_crash_note(crash: Crash, run_id: str) -> str:
    """What the run's status, its logs and Slack say when the guard stops requeueing."""
    return (
        f"{crash.summary} (not requeued: the previous attempt failed the same way before its "
        f"first step; fix the cause, then run slurm-launch --run-id {run_id})"
    )


@dataclass(frozen=True, slots=True)
class CrashJudgement:
    """Whether the crash of this attempt is requeued (within the crash budget) or ends the run."""

    crash: Crash
    repeated: bool
    """It repeats the previous attempt's crash (:func:`repeats_previous`): not requeued."""
    note: str | None
    """:func:`repeated_crash_note` when ``repeated``."""


@dataclass(slots=True)
class RestartProtocol:
    """Per-process state: which signal arrived, whether user code ever polls, and the
    judgement of the crash that ends the attempt."""

    config: RestartConfig
    started: float = field(default_factory=time.monotonic)
    received: str | None = None
    polled: bool = False
    """The code reached a step boundary (it polled :func:`signalled` or :func:`should_stop`):
    the attempt made progress, so a crash now may be transient."""
    judged: tuple[BaseException, CrashJudgement] | None = None
    """The first :func:`judge_crash` answer, so that the notifier, the tracker and the worker
    agree on it whatever the run folder holds when each asks."""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name.removeprefix("SIG")
        if self.received is None:
            self.received = name
        if not self.polled and name == "TERM":
            # Nothing was trained since the last checkpoint (the attempt is still starting, or
            # the code never polls should_stop): leave at once as a preemption instead of
            # waiting for a step boundary that may be minutes away, or never come.
            self._leave_unpolled()

    def _leave_unpolled(self) -> NoReturn:
        spent = read_counts(self.config.run_dir)
        if not budget_allows(self.config.budgets, "preemption", spent):
            raise Terminated("received SIGTERM; the preemption restart budget is spent")
        if distributed.is_rank_zero():
            request_requeue(self.config, "preemption", spent)
        raise RequeueRequested("preemption")

    def cause(self) -> Cause:
        stop = RunFiles(self.config.run_dir).stop_marker.exists()
        return classify(self.received, time.monotonic() - self.started, self.config, stop)


def should_stop() -> bool:
    """True on every rank once any rank was signalled; call it at each step boundary."""
    return distributed.all_agree(signalled())


def signalled() -> bool:
    """Whether this rank was signalled (no collective); the caller gets the ranks to agree.

    Like :func:`should_stop`, it tells the protocol that the code polls at step boundaries,
    so that a later SIGTERM waits for the next one instead of leaving at once.
    """
    protocol = _current.get()
    if protocol is None:
        return False
    protocol.polled = True
    return protocol.received is not None


def stop_now() -> NoReturn:
    """After the checkpoint: leave this attempt the way its cause asks (see module docstring)."""
    protocol = _current.get()
    if protocol is None:
        raise RequeueRequested("not launched by slurm-launch")
    config, cause = protocol.config, protocol.cause()
    if cause == "stop":
        raise StopRequested("stopped by slurm-stop")
    spent = read_counts(config.run_dir)
    if not budget_allows(config.budgets, cause, spent):
        raise RestartBudgetError(
            f"{cause} restart budget spent ({spent.get(cause, 0)} of {config.budgets.get(cause)}); "
            "raise restarts in the profile and relaunch with slurm-launch --run-id"
        )
    if distributed.is_rank_zero():
        request_requeue(config, cause, spent)
    raise RequeueRequested(cause)


def judge_crash(error: BaseException) -> CrashJudgement | None:
    """Whether the crash with ``error`` repeats the previous attempt's; None outside a job.

    Reads the previous attempt's crash from the run folder; the same error gets the same
    answer however often it is asked (the notifier, the tracker and the worker all ask).
    """
    protocol = _current.get()
    if protocol is None:
        return None
    if protocol.judged is not None and protocol.judged[0] is error:
        return protocol.judged[1]
    config = protocol.config
    crash = crash_of(error, before_first_step=not protocol.polled, config=config)
    repeated = repeats_previous(read_crash(config.run_dir), crash)
    note = repeated_crash_note(crash, config.run_dir.name) if repeated else None
    judgement = CrashJudgement(crash=crash, repeated=repeated, note=note)
    protocol.judged = (error, judgement)
    return judgement


def keep_crash(config: RestartConfig, crash: Crash) -> None:
    """Record this attempt's crash for the next attempt to compare with (rank 0 only)."""
    write_text_atomic(RunFiles(config.run_dir).last_crash, crash.to_json())


def read_crash(run_dir: Path) -> Crash | None:
    try:
        return Crash.from_json(RunFiles(run_dir).last_crash.read_text())
    except OSError:
        return None


def request_requeue(config: RestartConfig, cause: str, spent: Mapping[str, int]) -> None:
    """Spend one unit of ``cause``'s budget and leave the marker the batch script acts on."""
    counts = {**spent, cause: spent.get(cause, 0) + 1}
    _write_json(RunFiles(config.run_dir).restart_counts, counts)
    requests = read_requests(config.run_dir)
    asked = {**requests.get(config.job_key, {}), str(config.restart_count): cause}
    _write_json(RunFiles(config.run_dir).requeue_requests, {**requests, config.job_key: asked})
    config.marker_dir.mkdir(parents=True, exist_ok=True)
    _write_json(config.marker_dir / config.job_key, {"cause": cause})


def read_counts(run_dir: Path) -> dict[str, int]:
    try:
        counts = json.loads(RunFiles(run_dir).restart_counts.read_text())
        return {str(k): int(v) for k, v in counts.items()}
    except (FileNotFoundError, ValueError):
        return {}


def read_requests(run_dir: Path) -> dict[str, dict[str, str]]:
    """``{job key: {Slurm restart count: cause}}`` of every requeue the run's jobs asked for."""
    try:
        raw = json.loads(RunFiles(run_dir).requeue_requests.read_text())
        return {str(job): {str(n): str(c) for n, c in asked.items()} for job, asked in raw.items()}
    except (FileNotFoundError, ValueError, AttributeError):
        return {}


def unrequested(restart_count: int, asked: Mapping[str, str]) -> list[int]:
    """The Slurm restart counts, before ``restart_count``, of the attempts that asked for no
    requeue (in ``asked``, by restart count): Slurm requeued those itself."""
    return [count for count in range(restart_count) if str(count) not in asked]


def account_node_failures(config: RestartConfig) -> list[int]:
    """Count the earlier attempts of this job that Slurm requeued unasked as node failures,
    once each (rank 0, as an attempt starts); the restart counts of those attempts."""
    requests = read_requests(config.run_dir)
    asked = requests.get(config.job_key, {})
    lost = unrequested(config.restart_count, asked)
    if not lost:
        return []
    spent = read_counts(config.run_dir)
    counts = {**spent, NODE_FAILURE: spent.get(NODE_FAILURE, 0) + len(lost)}
    _write_json(RunFiles(config.run_dir).restart_counts, counts)
    marked = {**asked, **{str(count): NODE_FAILURE for count in lost}}
    _write_json(RunFiles(config.run_dir).requeue_requests, {**requests, config.job_key: marked})
    return lost


def _write_json(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data))


@contextlib.contextmanager
def protocol(config: RestartConfig) -> Generator[RestartProtocol]:
    """Install the handlers for the restart signal and SIGTERM for the block (main thread).

    On rank 0 it first counts the earlier attempts that Slurm requeued unasked
    (:func:`account_node_failures`), before anything reads the counts.
    """
    if distributed.is_rank_zero() and config.restart_count > 0:
        for count in account_node_failures(config):
            sys.stderr.write(
                f"blocktrain: Slurm requeued job {config.job_key} (restart {count}) without its"
                f" asking: a node failure, counted as {NODE_FAILURE}\n"
            )
    state = RestartProtocol(config=config)
    token = _current.set(state)
    signals = {signal.SIGTERM, getattr(signal, f"SIG{config.signal}")}
    previous: dict[signal.Signals, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            previous[sig] = signal.signal(sig, state.handle)
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # pyright: ignore[reportArgumentType]
        _current.reset(token)


def active() -> bool:
    """Whether this process runs under the restart protocol (a ``slurm-launch`` job)."""
    return _current.get() is not None
