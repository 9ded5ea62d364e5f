"""What an episode observed, and the invariants checked on it: pure functions of plain data.

The driver (:mod:`chaos.driver`) fills an :class:`Observed` for each episode and a
:class:`Reference` once per configuration (the same job, uninterrupted); :func:`check` returns
every :class:`Violation`. Nothing here is filtered to suit the code under test: a check that
the current code fails is reported as a violation.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from chaos.plan import Fault

FINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
"""MLflow's final run states."""
JOB_STATES: dict[str, frozenset[str]] = {
    "FINISHED": frozenset({"COMPLETED"}),
    "KILLED": frozenset({"CANCELLED", "COMPLETED"}),  # slurm-cancel; slurm-stop ends COMPLETED
    "FAILED": frozenset({"FAILED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL"}),
}
"""How the latest job of a run may have ended (sacct, or a local job's state file) for each
final state of the run."""
BOOKKEEPING = ("attempt", "requeues.", "system/")
"""Metrics the toolkit logs about the run rather than the training: not compared."""
CHECKPOINT_MARGIN_S = 0.5
"""A checkpoint written this long before an attempt started was there when it chose one."""
FINAL_WHILE_TRAINING_S = 5.0
"""How long a run may show a final state while its training goes on (a status in flight)."""


class Invariant(StrEnum):
    ONE_LIVE_JOB = "at most one live job per run"
    ONE_FINAL_STATE = "one final state, consistent everywhere"
    GOOD_CHECKPOINT = "no unloadable checkpoint chosen"
    BIT_IDENTICAL = "weights and metrics as uninterrupted"
    NO_ORPHANS = "no orphan job, process or allocation"
    METRICS_ONCE = "every metric point exactly once"
    FINISHES = "the run finishes after its faults"


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: Invariant
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    """The run at one sampled instant."""

    t: float
    live_jobs: tuple[str, ...] = ()
    """Its jobs in the queue (squeue, a local job's state file) or with live task processes."""
    status: str | None = None
    """MLflow's status of the run; None when it could not be read."""
    attempt: int = 0
    """The newest attempt with a log folder (0: none yet)."""
    progress: int = 0
    """Rank 0's progress lines (``step N loss``) in that attempt so far."""
    queue_known: bool = True
    """The queue could be asked (squeue fails while slurmctld is down)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class JobSpan:
    """When a job of the run held its allocation (accounting, or a local job's state file)."""

    job_id: str
    start: float | None
    end: float | None
    """None: still running when the episode ended."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RelaunchBatch:
    """``count`` ``slurm-launch --run-id`` started at the same instant."""

    t: float
    count: int
    accepted: tuple[str, ...]
    """The job ids the accepted ones submitted."""
    refused: tuple[str, ...] = ()
    """The refusals' lines."""
    after_finish: bool = False
    """The run had finished: every one of them must be refused."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StateView:
    """Every place that tells how the run ended, read once its jobs had left the queue."""

    t: float
    mlflow: str | None
    status_json: str | None
    """The run's status.json (written by its tracker)."""
    status_state: str | None
    """``slurm-status --json``: ``state`` (Slurm's, or the local job's)."""
    status_run_state: str | None
    """``slurm-status --json``: ``run_state`` (the run's own; STOPPED after slurm-stop)."""
    job_state: str | None
    """How its latest job ended: sacct, or the local job's state file."""
    finished_marker: bool
    live_jobs: tuple[str, ...] = ()
    """Jobs of the run still live when it was read (an episode cut off at its deadline): then
    nothing has ended, and the view is not judged."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptView:
    """One attempt, from its logs."""

    number: int
    started_at: float | None
    resumed_from: int | None
    """The step of the checkpoint it resumed from (``resumed from step N``)."""
    first_step: int | None
    """The first step it logged progress for; None when it never trained."""
    load_errors: tuple[str, ...] = ()
    """Lines of its ranks' error logs about a checkpoint that could not be loaded."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointView:
    step: int
    good: bool
    """Its checksum file exists and matches."""
    mtime: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Leftovers:
    """What remained once the episode's run had ended and settled."""

    processes: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    allocations: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class FaultRecord:
    fault: Fault
    at: float | None
    """When it was injected; None when it was not (the note says why)."""
    note: str = ""


Points = Mapping[str, Sequence[tuple[int, float]]]
"""A run's metric history: key -> (step, value) points in logged order."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference:
    """The same job, run once uninterrupted in the same configuration."""

    weights: Mapping[str, str]
    """Tensor name -> digest of the final weights."""
    metrics: Points


@dataclass(frozen=True, kw_only=True, slots=True)
class Observed:
    run_id: str
    t0: float
    """When the episode began: times are shown relative to it."""
    finished: bool
    """The run finished by its own account (its finished marker) before the episode's
    deadline; whether MLflow and the rest agree is :func:`one_final_state`'s to judge."""
    samples: Sequence[Sample] = ()
    spans: Sequence[JobSpan] = ()
    relaunches: Sequence[RelaunchBatch] = ()
    views: Sequence[StateView] = ()
    """At each settling (before a recovery relaunch), and at the end (the last)."""
    attempts: Sequence[AttemptView] = ()
    checkpoints: Sequence[CheckpointView] = ()
    weights: Mapping[str, str] | None = None
    metrics: Points = field(default_factory=dict[str, Sequence[tuple[int, float]]])
    leftovers: Leftovers = Leftovers()
    faults: Sequence[FaultRecord] = ()


def compared(key: str) -> bool:
    """Whether a metric is the training's own (compared with the uninterrupted run's)."""
    return not (key == BOOKKEEPING[0] or key.startswith(BOOKKEEPING[1:]))


def check(observed: Observed, reference: Reference | None) -> list[Violation]:
    """Every invariant; bit-identity and metric points only against a reference."""
    found = [
        *one_live_job(observed),
        *one_final_state(observed),
        *good_checkpoints(observed),
        *no_orphans(observed.leftovers),
        *finishes(observed),
    ]
    if reference is not None:
        found += [*bit_identical(observed, reference), *metrics_once(observed, reference)]
    return found


def _at(observed: Observed, t: float) -> str:
    return f"t+{t - observed.t0:.1f}s"


def one_live_job(observed: Observed) -> list[Violation]:
    """At no sampled instant, and in no two jobs' accounted times, does the run have two live
    jobs; of relaunches started together at most one submits."""
    found: list[Violation] = []
    crowded = [s for s in observed.samples if len(s.live_jobs) > 1]
    if crowded:
        worst = max(crowded, key=lambda s: len(s.live_jobs))
        found.append(
            Violation(
                Invariant.ONE_LIVE_JOB,
                f"{len(crowded)} sampled instant(s) with several live jobs, first at "
                f"{_at(observed, crowded[0].t)}: {', '.join(worst.live_jobs)}",
            )
        )
    for a, b in itertools.combinations(observed.spans, 2):
        if a.start is None or b.start is None:
            continue
        a_end = float("inf") if a.end is None else a.end
        b_end = float("inf") if b.end is None else b.end
        if a.start < b_end and b.start < a_end:
            overlap = min(a_end, b_end) - max(a.start, b.start)
            shown = "until the end" if overlap == float("inf") else f"{overlap:.1f}s"
            found.append(
                Violation(
                    Invariant.ONE_LIVE_JOB,
                    f"jobs {a.job_id} and {b.job_id} ran at the same time ({shown})",
                )
            )
    found += [
        Violation(
            Invariant.ONE_LIVE_JOB,
            f"{len(batch.accepted)} of {batch.count} concurrent relaunches at "
            f"{_at(observed, batch.t)} submitted a job: {', '.join(batch.accepted)}",
        )
        for batch in observed.relaunches
        if len(batch.accepted) > 1
    ]
    return found


def consistent(view: StateView) -> list[str]:
    """What disagrees among the places that tell how the run ended."""
    if view.live_jobs:
        return []
    if view.mlflow not in FINAL:
        return [f"MLflow says {view.mlflow} after every job of the run ended (left open)"]
    status = view.mlflow
    issues: list[str] = []
    # No status.json (no attempt got as far as its tracker) claims nothing, and neither does
    # the STATUS column it fills; a stale one claims what is no longer so.
    if view.status_json not in (None, status):
        issues.append(f"status.json says {view.status_json}, MLflow {status}")
    shown = "KILLED" if view.status_run_state == "STOPPED" else view.status_run_state
    if shown not in (None, status):
        issues.append(f"slurm-status STATUS says {view.status_run_state}, MLflow {status}")
    if view.status_state not in JOB_STATES[status] | {status}:
        issues.append(f"slurm-status STATE says {view.status_state}, MLflow {status}")
    if view.job_state not in JOB_STATES[status]:
        issues.append(f"the latest job ended {view.job_state}, the run {status}")
    if view.finished_marker != (status == "FINISHED"):
        marker = "a finished marker" if view.finished_marker else "no finished marker"
        issues.append(f"the run folder has {marker}, MLflow says {status}")
    return issues


def one_final_state(observed: Observed) -> list[Violation]:
    """Each time the run left the queue, and at the end, every place tells the same final
    state; once FINISHED it stays so, a finished run is not relaunched, and no run shows a
    final state for long while it trains."""
    found: list[Violation] = []
    for view in observed.views:
        found += [
            Violation(Invariant.ONE_FINAL_STATE, f"at {_at(observed, view.t)}: {issue}")
            for issue in consistent(view)
        ]
    finished_at = next((s.t for s in observed.samples if s.status == "FINISHED"), None)
    if finished_at is not None:
        later = [
            s for s in observed.samples if s.t > finished_at and s.status not in (None, "FINISHED")
        ]
        if later:
            found.append(
                Violation(
                    Invariant.ONE_FINAL_STATE,
                    f"FINISHED at {_at(observed, finished_at)}, then {later[0].status} at "
                    f"{_at(observed, later[0].t)}",
                )
            )
    for batch in observed.relaunches:
        if batch.after_finish and batch.accepted:
            found.append(
                Violation(
                    Invariant.ONE_FINAL_STATE,
                    f"a finished run was relaunched at {_at(observed, batch.t)}: "
                    f"{', '.join(batch.accepted)}",
                )
            )
    found += [Violation(Invariant.ONE_FINAL_STATE, d) for d in _final_while_training(observed)]
    return found


def _final_while_training(observed: Observed) -> list[str]:
    """Stretches of samples in which MLflow showed a final state while rank 0's progress in
    one attempt grew, for longer than :data:`FINAL_WHILE_TRAINING_S`."""
    stretches: list[str] = []
    start: Sample | None = None
    for previous, sample in itertools.pairwise(observed.samples):
        training = (
            sample.status in FINAL
            and previous.status == sample.status
            and sample.attempt == previous.attempt
            and sample.progress > previous.progress
        )
        if training and start is None:
            start = previous
        elif not training and start is not None:
            if previous.t - start.t > FINAL_WHILE_TRAINING_S:
                stretches.append(_stretch(observed, start, previous))
            start = None
    if start is not None and observed.samples[-1].t - start.t > FINAL_WHILE_TRAINING_S:
        stretches.append(_stretch(observed, start, observed.samples[-1]))
    return stretches


def _stretch(observed: Observed, start: Sample, end: Sample) -> str:
    return (
        f"MLflow said {start.status} from {_at(observed, start.t)} to {_at(observed, end.t)} "
        f"while attempt {start.attempt} trained"
    )


def good_checkpoints(observed: Observed) -> list[Violation]:
    """Every attempt that trained resumed from the newest good checkpoint there was when it
    started (or from step 0 when there was none), and none failed loading one."""
    found: list[Violation] = []
    for attempt in observed.attempts:
        found += [
            Violation(Invariant.GOOD_CHECKPOINT, f"attempt {attempt.number}: {line}")
            for line in attempt.load_errors
        ]
        if attempt.first_step is None:
            continue  # it never trained: whatever it chose, it did not train from it
        chosen = attempt.resumed_from
        if chosen is not None:
            own = next((c for c in observed.checkpoints if c.step == chosen), None)
            if own is not None and not own.good:
                found.append(
                    Violation(
                        Invariant.GOOD_CHECKPOINT,
                        f"attempt {attempt.number} resumed from the checkpoint of step {chosen}, "
                        "which does not match its checksum",
                    )
                )
        if attempt.started_at is None:
            continue
        there = [
            c
            for c in observed.checkpoints
            if c.good and c.mtime < attempt.started_at - CHECKPOINT_MARGIN_S
        ]
        newest = max((c.step for c in there), default=None)
        if newest is not None and newest > (chosen or 0):
            began = f"resumed from step {chosen}" if chosen is not None else "began at step 0"
            found.append(
                Violation(
                    Invariant.GOOD_CHECKPOINT,
                    f"attempt {attempt.number} {began} though the good checkpoint of step "
                    f"{newest} was there",
                )
            )
    return found


def no_orphans(leftovers: Leftovers) -> list[Violation]:
    parts = (
        ("process", leftovers.processes),
        ("job", leftovers.jobs),
        ("allocation", leftovers.allocations),
    )
    return [
        Violation(Invariant.NO_ORPHANS, f"{what} left: {item}")
        for what, items in parts
        for item in items
    ]


def finishes(observed: Observed) -> list[Violation]:
    if observed.finished:
        return []
    last = observed.samples[-1].status if observed.samples else None
    return [Violation(Invariant.FINISHES, f"the run did not finish (MLflow says {last})")]


def weights_differ(got: Mapping[str, str], want: Mapping[str, str]) -> list[str]:
    """Names of the tensors that differ, are missing or are extra."""
    return sorted(name for name in set(got) | set(want) if got.get(name) != want.get(name))


def final_points(points: Points) -> dict[str, tuple[int, float]]:
    """Each metric's last point (step, value): at its highest step, the latest logged there."""
    return {
        key: max(enumerate(p), key=lambda ip: (ip[1][0], ip[0]))[1]
        for key, p in points.items()
        if p
    }


def bit_identical(observed: Observed, reference: Reference) -> list[Violation]:
    """A finished run ends with the uninterrupted run's weights and final metrics, and logged
    the same value at each step (the docs promise bit-identical resumes for this CPU job on
    two ranks)."""
    if not observed.finished:
        return []
    found: list[Violation] = []
    if observed.weights is None:
        found.append(Violation(Invariant.BIT_IDENTICAL, "the finished run left no final weights"))
    else:
        differ = weights_differ(observed.weights, reference.weights)
        if differ:
            found.append(
                Violation(Invariant.BIT_IDENTICAL, f"final weights differ: {', '.join(differ)}")
            )
    got, want = final_points(observed.metrics), final_points(reference.metrics)
    for key in sorted(set(want) & set(got)):
        (step, value), (last, wanted_value) = got[key], want[key]
        if step == last and value != wanted_value:  # another last step: metrics_once says so
            found.append(
                Violation(
                    Invariant.BIT_IDENTICAL,
                    f"final {key} is {value!r}, uninterrupted {wanted_value!r}",
                )
            )
        wanted = dict(reference.metrics[key])
        odd = sorted(
            {s for s, v in observed.metrics[key] if s in wanted and s != last and v != wanted[s]}
        )
        if odd:
            found.append(
                Violation(
                    Invariant.BIT_IDENTICAL,
                    f"{key} differs from the uninterrupted run at step(s) {_steps(odd)}",
                )
            )
    return found


def metrics_once(observed: Observed, reference: Reference) -> list[Violation]:
    """Each (metric, step) the uninterrupted run logged is in the run exactly once, and no
    other; missing points count only for a run that finished."""
    found: list[Violation] = []
    for key in sorted(set(reference.metrics) | set(observed.metrics)):
        counts = Counter(step for step, _ in observed.metrics.get(key, ()))
        wanted = {step for step, _ in reference.metrics.get(key, ())}
        twice = sorted(s for s, n in counts.items() if n > 1)
        if twice:
            most = max(counts[s] for s in twice)
            found.append(
                Violation(
                    Invariant.METRICS_ONCE,
                    f"{key}: step(s) {_steps(twice)} logged more than once (up to {most} times)",
                )
            )
        extra = sorted(set(counts) - wanted)
        if extra:
            found.append(
                Violation(
                    Invariant.METRICS_ONCE,
                    f"{key}: step(s) {_steps(extra)} not logged by the uninterrupted run",
                )
            )
        missing = sorted(wanted - set(counts))
        if missing and observed.finished:
            found.append(
                Violation(Invariant.METRICS_ONCE, f"{key}: step(s) {_steps(missing)} missing")
            )
    return found


def _steps(steps: Iterable[int], shown: int = 8) -> str:
    listed = list(steps)
    text = ", ".join(str(s) for s in listed[:shown])
    return text + (f" and {len(listed) - shown} more" if len(listed) > shown else "")
