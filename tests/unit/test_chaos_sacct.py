"""The chaos harness reads when each Slurm job of a run was live from sacct (tests/chaos/driver.py):
a requeued job's earlier instances are its history, not a second live job."""

from __future__ import annotations

from chaos.driver import sacct_spans
from chaos.invariants import Invariant, Observed, one_live_job

SACCT = """\
1|2026-12-07T16:48:25|2026-12-07T16:48:52|COMPLETED
3|2026-12-07T16:49:12|2026-12-07T16:49:27|REQUEUED
4|2026-12-07T16:49:12|2026-12-07T16:50:32|COMPLETED
3|2026-12-07T16:49:27|2026-12-07T16:49:55|REQUEUED
3|2026-12-07T16:49:55|2026-12-07T16:50:25|CANCELLED by 0
5|2026-12-07T16:50:30|Unknown|RUNNING
"""


def test_a_requeued_job_spans_its_instances_and_the_running_one_has_no_end():
    spans = {s.job_id: s for s in sacct_spans(SACCT, ["3", "5"])}
    assert set(spans) == {"3", "5"}  # 1 and 4 are not the run's (a watcher, another run)
    three, five = spans["3"], spans["5"]
    assert three.start is not None
    assert three.end is not None
    assert three.end - three.start == 73.0  # 16:49:12 to 16:50:25
    assert five.end is None
    observed = Observed(run_id="r", t0=0.0, finished=True, spans=[three, five])
    assert one_live_job(observed) == []


def test_jobs_whose_instances_overlap_are_two_live_jobs():
    text = SACCT.replace("16:50:30|Unknown", "16:50:00|Unknown")
    observed = Observed(run_id="r", t0=0.0, finished=True, spans=sacct_spans(text, ["3", "5"]))
    [violation] = one_live_job(observed)
    assert violation.invariant is Invariant.ONE_LIVE_JOB
    assert violation.detail == "jobs 3 and 5 ran at the same time (25.0s)"
