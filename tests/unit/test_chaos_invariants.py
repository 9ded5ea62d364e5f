"""The chaos harness's invariants (tests/chaos/invariants.py), each on observations that keep it
and on observations that break it."""

from __future__ import annotations

import dataclasses

from chaos.invariants import (
    AttemptView,
    CheckpointView,
    Invariant,
    JobSpan,
    Leftovers,
    Observed,
    Reference,
    RelaunchBatch,
    Sample,
    StateView,
    check,
    compared,
    consistent,
    final_points,
)

T0 = 1000.0
LOSS = [(0, 0.5), (10, 0.4), (20, 0.3)]
REFERENCE = Reference(
    weights={"w": "aa", "b": "bb"}, metrics={"loss": LOSS, "final_loss": [(20, 0.25)]}
)
FINISHED = StateView(
    t=T0 + 30, mlflow="FINISHED", status_json="FINISHED", status_state="FINISHED",
    status_run_state="FINISHED", job_state="COMPLETED", finished_marker=True,
)  # fmt: skip


def clean() -> Observed:
    """A run that was stopped once, resumed exactly, and finished: breaks nothing."""
    samples = [
        Sample(t=T0 + 1, live_jobs=("L1",), status="RUNNING", attempt=1, progress=1),
        Sample(t=T0 + 2, live_jobs=("L1",), status="RUNNING", attempt=1, progress=2),
        Sample(t=T0 + 5, live_jobs=(), status="KILLED", attempt=1, progress=2),
        Sample(t=T0 + 8, live_jobs=("L2",), status="RUNNING", attempt=2, progress=1),
        Sample(t=T0 + 30, live_jobs=(), status="FINISHED", attempt=2, progress=2),
    ]
    stopped = dataclasses.replace(
        FINISHED, t=T0 + 6, mlflow="KILLED", status_json="KILLED", status_state="KILLED",
        status_run_state="STOPPED", job_state="COMPLETED", finished_marker=False,
    )  # fmt: skip
    return Observed(
        run_id="r",
        t0=T0,
        finished=True,
        samples=samples,
        spans=[
            JobSpan(job_id="L1", start=T0, end=T0 + 4),
            JobSpan(job_id="L2", start=T0 + 7, end=None),
        ],
        relaunches=[RelaunchBatch(t=T0 + 7, count=3, accepted=("L2",), refused=("busy", "busy"))],
        views=[stopped, FINISHED],
        attempts=[
            AttemptView(number=1, started_at=T0 + 1, resumed_from=None, first_step=0),
            AttemptView(number=2, started_at=T0 + 8, resumed_from=10, first_step=10),
        ],
        checkpoints=[
            CheckpointView(step=10, good=True, mtime=T0 + 3),
            CheckpointView(step=20, good=True, mtime=T0 + 29),
        ],
        weights={"w": "aa", "b": "bb"},
        metrics={"loss": LOSS, "final_loss": [(20, 0.25)]},
    )


def kinds(observed: Observed) -> list[Invariant]:
    return [v.invariant for v in check(observed, REFERENCE)]


def details(observed: Observed) -> str:
    return "\n".join(v.detail for v in check(observed, REFERENCE))


def test_a_clean_episode_violates_nothing():
    assert check(clean(), REFERENCE) == []


def test_two_live_jobs_at_one_instant_overlapping_spans_or_two_accepted_relaunches():
    crowded = dataclasses.replace(
        clean(),
        samples=[*clean().samples, Sample(t=T0 + 9, live_jobs=("L2", "L3"), status="RUNNING")],
    )
    assert kinds(crowded) == [Invariant.ONE_LIVE_JOB]
    assert "L2, L3" in details(crowded)
    overlapping = dataclasses.replace(
        clean(),
        spans=[
            JobSpan(job_id="L1", start=T0, end=None),
            JobSpan(job_id="L2", start=T0 + 7, end=T0 + 9),
        ],
    )
    assert kinds(overlapping) == [Invariant.ONE_LIVE_JOB]
    assert "L1 and L2 ran at the same time (2.0s)" in details(overlapping)
    twice = dataclasses.replace(
        clean(), relaunches=[RelaunchBatch(t=T0 + 7, count=2, accepted=("L2", "L3"))]
    )
    assert kinds(twice) == [Invariant.ONE_LIVE_JOB]
    assert "2 of 2 concurrent relaunches" in details(twice)


def test_the_places_that_tell_the_end_must_agree():
    assert consistent(FINISHED) == []
    stale = dataclasses.replace(
        FINISHED, mlflow="FAILED", job_state="FAILED", finished_marker=False
    )
    assert consistent(stale) == [
        "status.json says FINISHED, MLflow FAILED",
        "slurm-status STATUS says FINISHED, MLflow FAILED",
        "slurm-status STATE says FINISHED, MLflow FAILED",
    ]
    left_open = dataclasses.replace(FINISHED, mlflow="RUNNING")
    assert consistent(left_open) == [
        "MLflow says RUNNING after every job of the run ended (left open)"
    ]
    assert consistent(dataclasses.replace(left_open, live_jobs=("L2",))) == []  # not ended
    never_tracked = dataclasses.replace(
        stale, status_json=None, status_run_state=None, status_state="FAILED"
    )
    assert consistent(never_tracked) == []  # no attempt wrote a status: no claim
    crashed_at_exit = dataclasses.replace(FINISHED, job_state="FAILED")
    assert consistent(crashed_at_exit) == ["the latest job ended FAILED, the run FINISHED"]
    cancelled = StateView(
        t=T0, mlflow="KILLED", status_json="KILLED", status_state="CANCELLED",
        status_run_state="KILLED", job_state="CANCELLED", finished_marker=False,
    )  # fmt: skip
    assert consistent(cancelled) == []
    assert consistent(dataclasses.replace(cancelled, finished_marker=True)) == [
        "the run folder has a finished marker, MLflow says KILLED"
    ]


def test_a_final_state_changes_only_by_a_relaunch_and_never_after_finishing():
    observed = clean()
    after = Sample(t=T0 + 31, live_jobs=("L3",), status="RUNNING", attempt=3, progress=0)
    rerun = dataclasses.replace(
        observed,
        samples=[*observed.samples, after],
        relaunches=[
            *observed.relaunches,
            RelaunchBatch(t=T0 + 31, count=2, accepted=("L3",), after_finish=True),
        ],
    )
    assert kinds(rerun) == [Invariant.ONE_FINAL_STATE, Invariant.ONE_FINAL_STATE]
    assert "FINISHED at t+30.0s, then RUNNING at t+31.0s" in details(rerun)
    assert "a finished run was relaunched at t+31.0s: L3" in details(rerun)


def test_a_run_shown_ended_while_it_trains_on():
    training = [
        Sample(t=T0 + 10 + i, live_jobs=("5",), status="FAILED", attempt=2, progress=i)
        for i in range(8)
    ]
    observed = dataclasses.replace(
        clean(), samples=[*clean().samples[:4], *training, clean().samples[4]]
    )
    assert kinds(observed) == [Invariant.ONE_FINAL_STATE]
    assert "MLflow said FAILED from t+10.0s to t+17.0s while attempt 2 trained" in details(observed)
    short = dataclasses.replace(
        clean(), samples=[*clean().samples[:4], *training[:4], clean().samples[4]]
    )
    assert check(short, REFERENCE) == []


def test_resuming_from_a_bad_checkpoint_or_past_a_good_one():
    bad = dataclasses.replace(
        clean(),
        checkpoints=[CheckpointView(step=10, good=False, mtime=T0 + 3), *clean().checkpoints[1:]],
    )
    assert "resumed from the checkpoint of step 10, which does not match" in details(bad)
    passed_over = dataclasses.replace(
        clean(),
        checkpoints=[*clean().checkpoints, CheckpointView(step=15, good=True, mtime=T0 + 4)],
    )
    assert (
        "attempt 2 resumed from step 10 though the good checkpoint of step 15 was there"
        in details(passed_over)
    )
    from_zero = dataclasses.replace(
        clean(),
        attempts=[
            clean().attempts[0],
            AttemptView(number=2, started_at=T0 + 8, resumed_from=None, first_step=0),
        ],
    )
    assert "attempt 2 began at step 0 though the good checkpoint of step 10 was there" in details(
        from_zero
    )
    failed_load = dataclasses.replace(
        clean(),
        attempts=[
            *clean().attempts,
            AttemptView(number=3, started_at=T0 + 29.9, resumed_from=None, first_step=None,
                        load_errors=("BlocktrainError: checkpoint step-20.pt does not match",)),
        ],
    )  # fmt: skip
    assert kinds(failed_load) == [Invariant.GOOD_CHECKPOINT]
    assert (
        details(failed_load) == "attempt 3: BlocktrainError: checkpoint step-20.pt does not match"
    )


def test_leftovers_are_orphans():
    left = Leftovers(
        processes=("pid 7 (job L1): python task",),
        jobs=("12 PENDING",),
        allocations=("node1 mixed",),
    )
    observed = dataclasses.replace(clean(), leftovers=left)
    assert kinds(observed) == [Invariant.NO_ORPHANS] * 3


def test_weights_and_metric_values_match_the_uninterrupted_run():
    other = dataclasses.replace(clean(), weights={"w": "aa", "b": "xx"})
    assert details(other) == "final weights differ: b"
    drifted = dataclasses.replace(
        clean(), metrics={"loss": [(0, 0.5), (10, 0.41), (20, 0.3)], "final_loss": [(20, 0.26)]}
    )
    assert kinds(drifted) == [Invariant.BIT_IDENTICAL, Invariant.BIT_IDENTICAL]
    assert "final final_loss is 0.26, uninterrupted 0.25" in details(drifted)
    assert "loss differs from the uninterrupted run at step(s) 10" in details(drifted)
    unfinished = dataclasses.replace(drifted, finished=False, weights=None)
    assert Invariant.BIT_IDENTICAL not in kinds(unfinished)
    assert check(other, None) == []  # no reference, nothing to compare with


def test_every_metric_point_once():
    repeated = dataclasses.replace(
        clean(),
        metrics={
            "loss": [(0, 0.5), (10, 0.4), (20, 0.3), (10, 0.4), (20, 0.3)],
            "final_loss": [(20, 0.25)],
        },
    )
    assert details(repeated) == "loss: step(s) 10, 20 logged more than once (up to 2 times)"
    gaps = dataclasses.replace(
        clean(), metrics={"loss": [(0, 0.5), (5, 0.1)], "final_loss": [(20, 0.25)]}
    )
    assert details(gaps) == (
        "loss: step(s) 5 not logged by the uninterrupted run\nloss: step(s) 10, 20 missing"
    )
    assert compared("loss")
    assert not compared("attempt")
    assert not compared("requeues.preemption")
    assert not compared("system/cpu_utilization_percentage")
    assert final_points({"a": [(1, 1.0), (2, 2.0), (2, 3.0), (0, 9.0)]}) == {"a": (2, 3.0)}


def test_a_run_that_does_not_finish():
    observed = dataclasses.replace(
        clean(), finished=False, weights=None, metrics={"loss": LOSS[:1]}
    )
    assert kinds(observed) == [Invariant.FINISHES]
    assert details(observed) == "the run did not finish (MLflow says FINISHED)"
