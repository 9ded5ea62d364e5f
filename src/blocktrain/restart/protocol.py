"""The restart protocol inside a launched job's tasks: why an attempt stops, and how it leaves.

Slurm signals the tasks ``signal_lead_s`` seconds before the time limit with the profile's
``signal`` (USR2 by default), and sends SIGTERM on preemption; ``slurm-stop`` leaves a stop
marker in the run's folder and sends the profile's signal. The handler records which signal
came and returns, except for a SIGTERM that arrives before the code ever polled: nothing was
trained since the last checkpoint, so the attempt leaves at once as a preemption. The signal
may have reached this rank alone (someone else's ``kill``), and the others may be waiting for it
where no signal would reach them anyway (the process group's rendezvous): so whichever rank
leaves this way asks for the requeue itself, and a rank that waits for the others to meet gives
up once the attempt has asked for one (:func:`leave_if_requeued`).

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

A crash asks for a new attempt through :func:`request_requeue` too, within the ``crash``
budget, unless it repeats the previous attempt's before either reached a step boundary
(:func:`judge_crash`): a deterministic error, such as a missing data path, would only crash
again until the budget is spent. Any rank does so, the first to crash for the attempt, and
before anything slow (the Slack post, the MLflow upload): ``srun --kill-on-bad-exit`` then
ends the other tasks with a SIGTERM, and those find the attempt's crash, or the exit status of
a task killed outright, before they take the SIGTERM for a preemption
(:mod:`blocktrain.restart.endings`). A rank that is recording its own crash when the SIGTERM
comes only notes it.

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
import signal
import sys
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from types import FrameType
from typing import NoReturn

from blocktrain import distributed
from blocktrain.core.paths import RunFiles
from blocktrain.errors import RequeueRequested, StopRequested, Terminated
from blocktrain.restart.config import (
    Cause,
    RankFailedError,
    RestartBudgetError,
    RestartConfig,
    budget_allows,
    classify,
)
from blocktrain.restart.crashes import CrashJudgement, crash_of, judge, keep_crash, read_crash
from blocktrain.restart.endings import CRASH, PeerEnding, peer_ending
from blocktrain.restart.requeue import (
    NODE_FAILURE,
    account_node_failures,
    asked_cause,
    read_counts,
    request_requeue,
    task_exits,
)

_current: contextvars.ContextVar[RestartProtocol | None] = contextvars.ContextVar(
    "blocktrain_restart", default=None
)


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
    left_early: bool = False
    """This rank left the attempt without the other ranks' agreement (a SIGTERM before its
    first step, another rank's request or failure): the others must not be left waiting for
    it."""
    crashing: bool = False
    """This rank is recording its own crash (:func:`judge_crash`): a SIGTERM must not turn it
    into a preemption."""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name.removeprefix("SIG")
        if self.received is None:
            self.received = name
        # Once only: a second SIGTERM must not break into the way out.
        if name != "TERM" or self.left_early or self.crashing:
            return
        # srun ends the attempt's tasks with a SIGTERM once one of them failed: that one is
        # counted as what it was, and no collective can wait for it any more, trained or not.
        ending = self.peer_ending()
        if ending is not None:
            self._leave_after(ending)
        if not self.polled:
            # Nothing was trained since the last checkpoint (the attempt is still starting, or
            # the code never polls should_stop): leave at once as a preemption instead of
            # waiting for a step boundary that may be minutes away, or never come.
            self._leave_unpolled()

    def peer_ending(self) -> PeerEnding | None:
        """How another rank ended this attempt, from what it left in the run and marker folders."""
        config = self.config
        recorded = read_crash(config.run_dir)
        mine = recorded is not None and (recorded.job_key, recorded.restart_count) == (
            config.job_key,
            config.restart_count,
        )
        return peer_ending(
            asked=asked_cause(config),
            crash=recorded if mine else None,
            exits=task_exits(config),
            restart_signal=config.signal,
            budgets=config.budgets,
            spent=read_counts(config.run_dir),
            run_id=config.run_dir.name,
        )

    def _leave_after(self, ending: PeerEnding) -> NoReturn:
        self.left_early = True
        if ending.cause is None:
            raise RankFailedError(ending.reason or "another rank of this attempt failed")
        request_requeue(self.config, ending.cause, read_counts(self.config.run_dir))
        raise RequeueRequested(ending.cause)

    def _leave_unpolled(self) -> NoReturn:
        spent = read_counts(self.config.run_dir)
        if not budget_allows(self.config.budgets, "preemption", spent):
            self.left_early = True
            raise Terminated("received SIGTERM; the preemption restart budget is spent")
        # Every rank asks, not rank 0 alone: the signal may have reached this rank only, and the
        # request (spent once per attempt) is what tells the other ranks to leave too.
        request_requeue(self.config, "preemption", spent)
        self.left_early = True
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


def leave_if_requeued() -> None:
    """Leave (:class:`RequeueRequested`) when this attempt already asked for a requeue.

    For a rank that waits for the others to meet (the rendezvous, rank 0's port): another
    rank that left before its first step asked for the requeue and will never come. Leaving, it
    asks for the same requeue, which spends nothing again and leaves the marker in place.
    """
    protocol = _current.get()
    if protocol is None:
        return
    config = protocol.config
    cause = asked_cause(config)
    if cause is None:
        return
    protocol.left_early = True
    request_requeue(config, cause, read_counts(config.run_dir))
    raise RequeueRequested(cause)


def judge_crash(error: BaseException) -> CrashJudgement | None:
    """Whether the crash with ``error`` repeats the previous attempt's; None outside a job.

    The first judgement of an exception also acts on it: the attempt's first crash is recorded
    in the run folder, and a new attempt is asked for within the crash budget unless the guard
    refuses it. So the notifier, which sees the exception first, asks before its post. A crash
    that follows another rank's in the same attempt gets that one's judgement
    (:func:`~blocktrain.restart.crashes.judge`). The same error gets the same answer however
    often it is asked (the notifier, the tracker and the worker all ask).
    """
    protocol = _current.get()
    if protocol is None:
        return None
    if protocol.judged is not None and protocol.judged[0] is error:
        return protocol.judged[1]
    acts = isinstance(error, Exception) and not isinstance(error, _PROTOCOL_ERRORS)
    if acts:
        protocol.crashing = True
    config = protocol.config
    rank = distributed.rank_and_world()[0]
    crash = crash_of(error, before_first_step=not protocol.polled, config=config, rank=rank)
    recorded = read_crash(config.run_dir)
    if not acts and (recorded is None or not recorded.same_attempt(crash)):
        # The protocol's own endings are no crash to compare with the previous attempt's.
        recorded = None
    judgement = judge(recorded, crash, config.run_dir.name)
    protocol.judged = (error, judgement)
    if acts:
        _act_on_crash(config, judgement)
    return judgement


# Raised by the protocol itself when the run must end: never recorded nor requeued as a crash.
_PROTOCOL_ERRORS = (RestartBudgetError, RankFailedError)


def _act_on_crash(config: RestartConfig, judgement: CrashJudgement) -> None:
    if judgement.first:
        with contextlib.suppress(OSError):  # without the record, the next crash is requeued
            keep_crash(config, judgement.crash)
    if judgement.repeated:
        return
    spent = read_counts(config.run_dir)
    # A requeue the attempt asked for already (another rank's) is asked again at no cost.
    if asked_cause(config) is not None or budget_allows(config.budgets, CRASH, spent):
        request_requeue(config, CRASH, spent)


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
