"""The chaos harness's report (tests/chaos/report.py): recovery times and the printed table."""

from __future__ import annotations

from chaos.invariants import FaultRecord, Invariant, Observed, RelaunchBatch, Sample, Violation
from chaos.plan import Anchor, Config, EpisodePlan, Fault, Kind
from chaos.report import EpisodeResult, fault_recoveries, percentile, recovery_s, render

T0 = 100.0


def samples(*points: tuple[float, int, int]) -> list[Sample]:
    return [Sample(t=T0 + t, attempt=a, progress=p) for t, a, p in points]


def test_recovery_is_the_first_progress_of_a_newer_attempt_else_of_the_same():
    restarted = samples((1, 1, 5), (2, 1, 6), (3, 1, 6), (9, 2, 0), (10, 2, 1), (11, 2, 2))
    assert recovery_s(T0 + 1.5, restarted, None) == 8.5  # the old attempt's last line ignored
    stalled = samples((1, 1, 5), (2, 1, 5), (6, 1, 5), (7, 1, 6))
    assert recovery_s(T0 + 1.5, stalled, None) == 5.5
    assert recovery_s(T0 + 1.5, stalled, T0 + 6) is None  # the next fault came first
    assert recovery_s(T0 + 8, stalled, None) is None


def test_recoveries_of_a_run_count_until_the_next_fault():
    sigkill = Fault(kind=Kind.SIGKILL_RANK, rank=1)
    after = Fault(kind=Kind.RELAUNCH_FINISHED, anchor=Anchor.FINISHED, count=2)
    observed = Observed(
        run_id="r",
        t0=T0,
        finished=True,
        samples=samples((1, 1, 3), (5, 2, 1), (6, 2, 9)),
        faults=[
            FaultRecord(fault=sigkill, at=T0 + 2),
            FaultRecord(fault=Fault(kind=Kind.REQUEUE), at=None, note="the run finished first"),
            FaultRecord(fault=after, at=T0 + 7),
        ],
    )
    assert [(r.fault.kind, s) for r, s in fault_recoveries(observed)] == [
        (Kind.SIGKILL_RANK, 3.0),
        (Kind.RELAUNCH_FINISHED, None),
    ]


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 11)]
    assert (percentile(values, 0.5), percentile(values, 0.9), percentile(values, 1.0)) == (
        5.0,
        9.0,
        10.0,
    )
    assert percentile([3.0], 0.9) == 3.0


def test_the_table_shows_faults_by_kind_violations_and_what_did_not_run():
    config = Config()
    sigkill = Fault(kind=Kind.SIGKILL_RANK, rank=1, delay_s=1.25)
    plan = EpisodePlan(seed=4, index=2, config=config, faults=(sigkill,))
    observed = Observed(
        run_id="r",
        t0=T0,
        finished=True,
        samples=samples((1, 1, 3), (12, 2, 1)),
        relaunches=[RelaunchBatch(t=T0 + 8, count=2, accepted=("L2",))],
        faults=[FaultRecord(fault=sigkill, at=T0 + 2)],
    )
    found = Violation(Invariant.METRICS_ONCE, "loss: step(s) 40 logged more than once")
    results = [
        EpisodeResult(plan=EpisodePlan(seed=4, index=-1, config=config, faults=()), observed=None,
                      baseline=True, seconds=30),
        EpisodeResult(plan=plan, observed=observed, violations=[found], kept="/tmp/ep-2"),
        EpisodeResult(plan=EpisodePlan(seed=4, index=3, config=config, faults=(sigkill,)),
                      observed=None, error="RuntimeError: slurm-launch failed"),
    ]  # fmt: skip
    text = render(results, config, 4, 125.0)
    lines = text.splitlines()
    assert lines[0].startswith("chaos: 2 episode(s) on local, 1 node, seed 4, 2.1 min; 1 with")
    assert "1 harness error(s)" in lines[0]
    row = next(line.split() for line in lines if line.strip().startswith("sigkill-rank"))
    assert row == ["sigkill-rank", "2", "1", "1", "10.0", "/", "10.0", "/", "10.0"]
    assert "  slurmctld-restart: not run here (no Slurm daemons under --executor local)" in lines
    assert "relaunch batches: 1 (2 slurm-launch --run-id); 1 accepted: 1" in lines
    row = next(line.split("  ") for line in lines if "every metric point exactly once" in line)
    assert [cell.strip() for cell in row if cell.strip()][-2:] == ["1", "1"]
    assert (
        "  episode 2 (seed 4): faults sigkill-rank training+1.25s rank 1 @t+2.0s; kept /tmp/ep-2"
        in lines
    )
    assert "    [every metric point exactly once] loss: step(s) 40 logged more than once" in lines
    assert "  episode 3 (seed 4): RuntimeError: slurm-launch failed" in lines
    assert text.endswith("\n")
