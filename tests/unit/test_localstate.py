"""Jobs without Slurm: a task's environment as the worker reads it, the supervisor's decisions,
the state file, and elements in squeue's shape."""

from __future__ import annotations

import pytest

from blocktrain.core.jobenv import job_context
from blocktrain.launch.local import jobstate
from blocktrain.launch.local.jobstate import Element, LocalJob, LocalPlan
from blocktrain.restart import RestartConfig


def plan(*, array: bool = False, parallel: int = 1) -> LocalPlan:
    return LocalPlan(
        job_id="L7", array=array, specs=[{"run_id": "r0"}, {"run_id": "r1"}], job_name="train",
        tasks=2, cpus_per_task=3, python=["/venv/bin/python"], env={"OMP_NUM_THREADS": "3"},
        code_paths=["/p/code/src", "/p/code"], output="/p/out", project_root="/p",
        requeue_dir="/p/requeue", time_limit_s=600, signal="USR2", lead_s=60, parallel=parallel,
    )  # fmt: skip


def test_a_task_of_an_array_element_reads_as_a_slurm_task_of_it() -> None:
    env = jobstate.task_env(plan(array=True), 3, rank=1, restart_count=2, port=23456)
    env |= {"BLOCKTRAIN_RUN_DIR": "/p/run", "BLOCKTRAIN_REQUEUE_DIR": "/p/requeue"}
    context = job_context(env, host="here")
    assert (context.rank, context.local_rank, context.world_size) == (1, 1, 2)
    assert (context.job_id, context.array_index, context.restart_count) == ("L7_3", 3, 2)
    assert context.attempt == 3
    config = RestartConfig.from_environ(env)
    assert config is not None
    assert config.job_key == "L7_3"
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("127.0.0.1", "23456")
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["SLURM_CPUS_PER_TASK"] == "3"


def test_a_plain_job_has_no_array_variables() -> None:
    env = jobstate.task_env(plan(), 0, rank=0, restart_count=0, port=1)
    assert env["SLURM_JOB_ID"] == "L7"
    assert "SLURM_ARRAY_JOB_ID" not in env
    assert job_context(env, host="here").job_id == "L7"


def test_the_task_environment_drops_inherited_slurm_variables_and_puts_the_code_first() -> None:
    inherited = {"SLURM_JOB_ID": "99", "SLURM_ARRAY_TASK_ID": "5", "PYTHONPATH": "/x", "HOME": "/h"}
    env = jobstate.merged_env(inherited, {"SLURM_JOB_ID": "L7"}, ["/c/src", "/c"])
    assert env == {"SLURM_JOB_ID": "L7", "PYTHONPATH": "/c/src:/c:/x", "HOME": "/h"}
    assert jobstate.merged_env({}, {}, ["/c"])["PYTHONPATH"] == "/c"


@pytest.mark.parametrize(
    ("codes", "asked", "cancelled", "timed_out", "expected"),
    [
        ([0, 0], False, False, False, "COMPLETED"),
        ([0, 1], False, False, False, "FAILED"),
        ([0, 0], True, False, False, jobstate.REQUEUE),  # checkpointed, asked for more
        ([1, 1], True, False, False, jobstate.REQUEUE),  # a crash within its budget
        ([0, 0], True, True, False, "CANCELLED"),  # cancelled stays cancelled
        ([-9, -9], True, False, True, "TIMEOUT"),  # killed at the limit
    ],
)
def test_what_follows_the_end_of_the_tasks(
    codes: list[int], asked: bool, cancelled: bool, timed_out: bool, expected: str
) -> None:
    got = jobstate.outcome(codes, requeue_asked=asked, cancelled=cancelled, timed_out=timed_out)
    assert got == expected


def test_exit_code_is_the_first_failure_and_signals_count_as_128_plus() -> None:
    assert jobstate.exit_code([0, 0]) == 0
    assert jobstate.exit_code([0, 3, 1]) == 3
    assert jobstate.exit_code([-15, 0]) == 143


def test_the_signal_comes_lead_seconds_before_the_limit() -> None:
    assert jobstate.deadlines(1000.0, 600, 60) == (1540.0, 1600.0)
    assert jobstate.deadlines(1000.0, 60, 120) == (1000.0, 1060.0)


def test_elements_start_in_order_up_to_the_parallelism() -> None:
    def states(*names: str) -> list[Element]:
        return [Element(state=name) for name in names]

    assert jobstate.startable(states("PENDING", "PENDING", "PENDING"), 1) == [0]
    assert jobstate.startable(states("COMPLETED", "RUNNING", "PENDING"), 1) == []
    assert jobstate.startable(states("FAILED", "REQUEUED", "PENDING", "PENDING"), 2) == [2]
    assert jobstate.startable(states("PENDING", "PENDING", "PENDING"), 2) == [0, 1]


def test_the_state_file_round_trips() -> None:
    job = LocalJob(
        plan=plan(array=True),
        elements=[Element(state="RUNNING", started=5.0, pids=[11, 12]), Element()],
        submitted=1.5,
        supervisor_pid=10,
    )
    again = LocalJob.from_json(job.to_json())
    assert again == job
    assert [again.key(0), again.key(1)] == ["L7_0", "L7_1"]
    assert not again.finished


def test_elements_in_squeue_shape_and_a_lost_supervisor() -> None:
    job = LocalJob(
        plan=plan(array=True),
        elements=[
            Element(state="COMPLETED", started=100.0, ended=165.0, exit_code=0),
            Element(state="RUNNING", started=100.0),
        ],
        submitted=90.0,
    )
    done = jobstate.queue_entry(job, 0, now=4000.0, supervised=True)
    running = jobstate.queue_entry(job, 1, now=3800.0, supervised=True)
    lost = jobstate.queue_entry(job, 1, now=3800.0, supervised=False)
    assert (done.job_id, done.state, done.elapsed, done.nodes) == (
        "L7_0", "COMPLETED", "1:05", "localhost"
    )  # fmt: skip
    assert (running.state, running.elapsed) == ("RUNNING", "1:01:40")
    assert lost.state == "FAILED"
    pending = LocalJob(plan=plan(), elements=[Element()], submitted=1.0)
    entry = jobstate.queue_entry(pending, 0, now=50.0, supervised=True)
    assert (entry.job_id, entry.state, entry.elapsed, entry.nodes) == ("L7", "PENDING", "0:00", "")


@pytest.mark.parametrize(
    ("job_id", "local"), [("L7", True), ("L12_3", True), ("120", False), ("120_3", False),
                          ("Lx", False), ("L", False)],
)  # fmt: skip
def test_local_job_ids(job_id: str, local: bool) -> None:
    assert jobstate.is_local(job_id) is local


def test_elapsed_in_slurm_format() -> None:
    assert jobstate.elapsed_text(59.9) == "0:59"
    assert jobstate.elapsed_text(3600) == "1:00:00"
    assert jobstate.elapsed_text(2 * 86400 + 61) == "2-00:01:01"
    assert jobstate.element_index("L7_3") == 3
    assert jobstate.element_index("L7") == 0
