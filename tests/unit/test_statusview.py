"""slurm-status's logic: parsing squeue/sacct, joining them with records and local status,
choosing the metric, rendering; and the CLI's calls to Slurm, counted with fake commands."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from blocktrain.cli import status
from blocktrain.core.paths import Layout
from blocktrain.launch import statusview
from blocktrain.launch.local import supervisor
from blocktrain.launch.local.jobstate import Element, LocalJob, LocalPlan
from blocktrain.launch.records.store import JobEntry, RunRecord, write_record
from blocktrain.launch.slurm.commands import QueueEntry, parse_squeue
from blocktrain.launch.statusview import LocalStatus

SUBMITTED = "2026-01-10T12:00:00+0000"
SUBMITTED_EPOCH = 1768046400.0


def record(run_id: str, job_id: str | None = "100", **fields: object) -> RunRecord:
    jobs = [JobEntry(job_id=job_id, submitted=SUBMITTED)] if job_id else []
    values: dict[str, object] = {
        "run_id": run_id,
        "entry": "shapes_demo:train",
        "args": {},
        "profile": "local",
        "profile_values": {},
        "launch_id": "20260110-120000-abcdef",
        "created": SUBMITTED,
        "tracking_uri": "sqlite:///x.db",
        "experiment": "proj",
        "jobs": jobs,
        **fields,
    }
    return RunRecord(**values)  # pyright: ignore[reportArgumentType]


def finished(updated: float = SUBMITTED_EPOCH + 60, **metrics: float) -> LocalStatus:
    return LocalStatus(status="FINISHED", attempt=1, metrics=metrics, updated=updated)


# --- parsing -------------------------------------------------------------------------------


def test_sacct_lines_become_entries() -> None:
    text = (
        "123|COMPLETED|00:00:25|vm\n"
        "120_3|FAILED|00:01:02|node[1-2]\n"
        "121|CANCELLED by 1000|00:00:01|vm\n"
        "\n"
        "garbage\n"
    )
    assert statusview.parse_sacct(text) == [
        QueueEntry("123", "COMPLETED", "00:00:25", "vm"),
        QueueEntry("120_3", "FAILED", "00:01:02", "node[1-2]"),
        QueueEntry("121", "CANCELLED", "00:00:01", "vm"),
    ]


def test_sacct_pending_array_range_is_expanded_without_nodes() -> None:
    entries = statusview.parse_sacct("14_[0-2]|PENDING|00:00:00|None assigned\n")
    assert [e.job_id for e in entries] == ["14_0", "14_1", "14_2"]
    assert {e.nodes for e in entries} == {""}


def test_squeue_pending_range_with_throttle_and_running_element() -> None:
    entries = parse_squeue("2_[1-2,5%4]|PENDING|0:00|\n2_0|RUNNING|0:07|vm\n")
    assert [(e.job_id, e.state) for e in entries] == [
        ("2_1", "PENDING"),
        ("2_2", "PENDING"),
        ("2_5", "PENDING"),
        ("2_0", "RUNNING"),
    ]


def test_later_line_wins_and_base_ids_ask_for_whole_arrays() -> None:
    entries = statusview.parse_sacct("7|REQUEUED|00:00:03|vm\n7|COMPLETED|00:00:09|vm\n")
    assert statusview.by_job(entries)["7"].state == "COMPLETED"
    assert statusview.base_ids(["120_3", "9", "120_0", "100"]) == ["9", "100", "120"]


def test_local_status_reads_status_json_and_the_newest_attempt_folder() -> None:
    text = json.dumps(
        {"status": "RUNNING", "attempt": 1, "metrics": {"loss": 0.5, "bad": "x"}, "updated": 5}
    )
    local = statusview.local_status(text, newest_attempt=2, touched=9.0)
    assert local == LocalStatus(
        status="RUNNING", attempt=2, metrics={"loss": 0.5}, updated=5.0, touched=9.0
    )


@pytest.mark.parametrize("text", [None, "", "{torn", "[1, 2]", '{"metrics": [1]}'])
def test_local_status_tolerates_missing_or_foreign_files(text: str | None) -> None:
    assert statusview.local_status(text, None, None) == LocalStatus()


def test_epoch_of_record_stamps() -> None:
    assert statusview.epoch(SUBMITTED) == SUBMITTED_EPOCH
    assert statusview.epoch("yesterday") is None


# --- joining -------------------------------------------------------------------------------


def test_row_of_a_queued_job_comes_from_squeue() -> None:
    queued = {"120_1": QueueEntry("120_1", "RUNNING", "1:05", "vm")}
    local = LocalStatus(status="RUNNING", attempt=1, metrics={"train_loss": 0.25})
    row = statusview.build_row(record("a" * 32, "120_1", array_index=1), local, queued, {})
    assert (row.job_id, row.array_index, row.state, row.attempt) == ("120_1", 1, "RUNNING", 1)
    assert (row.elapsed, row.nodes, row.metric) == ("1:05", "vm", "train_loss=0.25")


def test_row_of_a_job_that_left_the_queue_comes_from_sacct() -> None:
    accounted = {"100": QueueEntry("100", "COMPLETED", "00:00:25", "vm")}
    row = statusview.build_row(record("r1"), finished(val_acc=0.9), {}, accounted)
    assert (row.state, row.elapsed, row.nodes, row.metric) == (
        "COMPLETED",
        "00:00:25",
        "vm",
        "val_acc=0.9",
    )


def test_without_accounting_the_state_comes_from_status_json() -> None:
    row = statusview.build_row(record("r1"), finished(), {}, {})
    assert (row.state, row.elapsed, row.nodes) == ("FINISHED", None, None)


def test_without_any_source_the_state_is_unknown() -> None:
    assert statusview.build_row(record("r1"), LocalStatus(), {}, {}).state == "UNKNOWN"
    assert statusview.build_row(record("r1", None), LocalStatus(), {}, {}).job_id is None


def test_status_json_older_than_the_latest_job_is_stale() -> None:
    """A relaunched run must not show the previous job's FINISHED."""
    stale = finished(updated=SUBMITTED_EPOCH - 60)
    assert statusview.build_row(record("r1"), stale, {}, {}).state == "UNKNOWN"
    assert not statusview.settled(record("r1"), stale)
    assert statusview.settled(record("r1"), finished())


def test_only_unsettled_runs_are_asked_about_in_squeue() -> None:
    runs = [record("done", "1"), record("going", "2"), record("stale", "3"), record("new", None)]
    local = {"done": finished(), "stale": finished(updated=0.0)}
    assert statusview.queue_ids(runs, local) == ["2", "3"]


def test_default_selection_keeps_queued_and_recently_active_runs() -> None:
    now = SUBMITTED_EPOCH + 3 * statusview.RECENT_S
    runs = [record("old", "1"), record("queued", "2"), record("recent", "3")]
    local = {"recent": LocalStatus(touched=now - 3600)}
    queued = {"2": QueueEntry("2", "PENDING", "0:00", "")}
    chosen = statusview.recent(runs, local, queued, now)
    assert [r.run_id for r in chosen] == ["queued", "recent"]
    assert statusview.accounting_ids(chosen, queued) == ["3"]


def test_rows_are_newest_launch_first_then_array_index() -> None:
    runs = [
        record("old", launch_id="20260101-000000-aaaaaa"),
        record("b1", launch_id="20260102-000000-bbbbbb", array_index=1),
        record("b0", launch_id="20260102-000000-bbbbbb", array_index=0),
    ]
    assert [r.run_id for r in statusview.build_rows(runs, {}, {}, {})] == ["b0", "b1", "old"]


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({}, None),
        ({"attempt": 2.0}, None),
        (
            {"attempt": 1.0, "train_loss": 0.3, "val_accuracy": 0.9, "lr": 0.1},
            ("val_accuracy", 0.9),
        ),
        ({"attempt": 1.0, "train_loss": 0.3, "lr": 0.1}, ("lr", 0.1)),
        ({"Val_Loss": 1.5, "val_acc": 0.7}, ("Val_Loss", 1.5)),
    ],
)
def test_metric_choice(metrics: dict[str, float], expected: tuple[str, float] | None) -> None:
    assert statusview.choose_metric(metrics) == expected


# --- rendering -----------------------------------------------------------------------------


def test_table_columns_are_as_wide_as_their_content() -> None:
    rows = [
        statusview.build_row(
            record("0123456789abcdef", "120_0", name="base", array_index=0),
            LocalStatus(attempt=2, metrics={"val_acc": 0.91234}),
            {"120_0": QueueEntry("120_0", "RUNNING", "10:00", "vm")},
            {},
        ),
        statusview.build_row(record("fedcba9876543210", "7"), LocalStatus(), {}, {}),
    ]
    assert statusview.render_table(rows) == (
        "RUN       NAME  JOB    STATE    STATUS  ATTEMPT  ELAPSED  NODES  METRIC\n"
        "01234567  base  120_0  RUNNING  -       2        10:00    vm     val_acc=0.9123\n"
        "fedcba98  -     7      UNKNOWN  -       -        -        -      -\n"
    )


def test_json_is_a_list_of_flat_rows_with_the_full_run_id() -> None:
    row = statusview.build_row(record("r" * 32), finished(val_acc=0.5), {}, {})
    [shown] = json.loads(statusview.render_json([row]))
    assert shown == {
        "run_id": "r" * 32,
        "name": None,
        "job_id": "100",
        "array_index": None,
        "state": "FINISHED",
        "attempt": 1,
        "elapsed": None,
        "nodes": None,
        "metric": "val_acc=0.5",
        "metrics": {"val_acc": 0.5},
        "reason": None,
        "executor": "slurm",
        "parent_run_id": None,
        "run_state": "FINISHED",
        "resume": None,
    }


def test_a_local_job_is_marked_and_once_ended_shows_its_run_status() -> None:
    def local_record(run_id: str, job_id: str) -> RunRecord:
        job = JobEntry(job_id=job_id, submitted=SUBMITTED, executor="local")
        return record(run_id, None, jobs=[job])

    ended = {"L7": QueueEntry("L7", "COMPLETED", "0:43", "localhost")}
    running = {"L8": QueueEntry("L8", "RUNNING", "0:05", "localhost")}
    rows = [
        statusview.build_row(local_record("a" * 16, "L7"), finished(loss=0.25), {}, ended),
        statusview.build_row(local_record("b" * 16, "L8"), LocalStatus(), running, {}),
        statusview.build_row(local_record("c" * 16, "L9"), LocalStatus(), {}, {}),
    ]
    assert [(r.state, r.executor) for r in rows] == [
        ("FINISHED", "local"), ("RUNNING", "local"), ("UNKNOWN", "local")
    ]  # fmt: skip
    assert statusview.cells(rows[0])[2] == "L7 (local)"
    assert statusview.split_local(["120_3", "L7", "L8_1", "9"]) == (["L7", "L8_1"], ["120_3", "9"])
    queued, accounted = statusview.by_state([*ended.values(), *running.values()])
    assert (list(queued), list(accounted)) == (["L8"], ["L7"])


# --- the CLI's calls to Slurm (fake squeue and sacct on PATH, which log their arguments) ---

FAKE = """#!{python}
import os, sys
with open(os.environ["FAKE_SLURM_LOG"], "a") as log:
    log.write("{name} " + " ".join(sys.argv[1:]) + "\\n")
reply = os.environ.get("FAKE_{upper}_REPLY", "")
if reply.startswith("error:"):
    sys.stderr.write(reply + "\\n")
    sys.exit(1)
sys.stdout.write(reply.replace(";", "\\n"))
"""


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with fake ``squeue``/``sacct`` first on PATH; returns the calls log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sacct"):
        script = bin_dir / name
        script.write_text(FAKE.format(python=sys.executable, name=name, upper=name.upper()))
        script.chmod(0o755)
    calls = tmp_path / "calls.log"
    calls.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(calls))
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.blocktrain]\n")
    monkeypatch.chdir(project)
    return calls


def slurm_calls(calls: Path) -> list[str]:
    return [line for line in calls.read_text().splitlines() if line.startswith(("squeue", "sacct"))]


def add_run(run_id: str, job_id: str, status_json: dict[str, object] | None = None) -> None:
    layout = Layout(Path.cwd())
    write_record(layout, record(run_id, job_id))
    if status_json is not None:
        logs = layout.run_logs(run_id)
        (logs / "attempt-1").mkdir(parents=True)
        (logs / "status.json").write_text(json.dumps(status_json))


def test_one_squeue_and_one_sacct_per_refresh(
    fake_slurm: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_SQUEUE_REPLY", "120_[1-2]|PENDING|0:00|;120_0|RUNNING|0:09|vm")
    monkeypatch.setenv("FAKE_SACCT_REPLY", "7|COMPLETED|00:00:20|vm")
    for index in range(3):
        add_run(f"arr{index}", f"120_{index}")
    add_run("done", "7", {"status": "FINISHED", "attempt": 1, "updated": SUBMITTED_EPOCH + 9})
    add_run("gone", "8")
    assert status.main(["--all", "--json"]) == 0
    states = {row["run_id"]: row["state"] for row in json.loads(capsys.readouterr().out)}
    assert states == {
        "arr0": "RUNNING", "arr1": "PENDING", "arr2": "PENDING", "done": "COMPLETED",
        "gone": "UNKNOWN",
    }  # fmt: skip
    assert slurm_calls(fake_slurm) == [
        "squeue -h -o %i|%T|%M|%N -j 120,8",
        "sacct -X -P -n -o JobID,State,Elapsed,NodeList -j 7,8",
    ]


def test_no_slurm_call_without_runs(fake_slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main([]) == 0
    assert "no runs queued, running or ended in the last 24 h" in capsys.readouterr().out
    assert slurm_calls(fake_slurm) == []


def test_accounting_off_falls_back_to_status_json(
    fake_slurm: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_SACCT_REPLY", "error: Slurm accounting storage is disabled")
    add_run("done", "7", {"status": "FAILED", "attempt": 3, "updated": SUBMITTED_EPOCH + 9})
    assert status.main(["--all"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split()[3:6] == ["FAILED", "FAILED", "3"]
    assert "accounting storage is disabled" in err
    assert len(err.splitlines()) == 1


def test_unreachable_cluster_is_one_line_and_exit_1(
    fake_slurm: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_SQUEUE_REPLY", "error: Unable to contact slurm controller")
    add_run("going", "9")
    assert status.main(["--all"]) == 1
    assert capsys.readouterr().err == (
        "slurm-status: error: squeue -h failed: error: Unable to contact slurm controller\n"
    )


def test_unknown_run_is_one_line_and_exit_2(
    fake_slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_run("abcdef123456", "9")
    assert status.main(["abcdef", "nothing"]) == 2
    assert capsys.readouterr().err == (
        "slurm-status: error: no run or job matches 'nothing'; see slurm-status --all\n"
    )
    assert slurm_calls(fake_slurm) == []


def test_watch_redraws_until_ctrl_c_without_escape_codes_off_a_tty(
    fake_slurm: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_SQUEUE_REPLY", "9|RUNNING|0:01|vm")
    add_run("going", "9")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(status, "pause", sleep)
    assert status.main(["--watch", "2"]) == 0
    out = capsys.readouterr().out
    assert sleeps == [2.0, 2.0]
    assert out.count("\ngoing  -     9    RUNNING") == 2
    assert "\033" not in out
    assert slurm_calls(fake_slurm) == ["squeue -h -o %i|%T|%M|%N -j 9"] * 2


def test_local_jobs_answer_from_their_state_files_without_asking_slurm(
    fake_slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = Layout(Path.cwd())
    for run_id, job_id in (("loc0", "L3_0"), ("loc1", "L3_1")):
        job = JobEntry(job_id=job_id, submitted=SUBMITTED, executor="local")
        write_record(layout, record(run_id, None, jobs=[job]))
    plan = LocalPlan(
        job_id="L3", array=True, specs=[{"run_id": "loc0"}, {"run_id": "loc1"}],
        job_name="train", tasks=1, cpus_per_task=1, python=["python"], env={}, code_paths=[],
        output="out", project_root=str(Path.cwd()), requeue_dir="requeue", time_limit_s=60,
        signal="USR2", lead_s=10,
    )  # fmt: skip
    elements = [Element(state="RUNNING", started=SUBMITTED_EPOCH), Element()]
    supervisor.write_job(
        layout, LocalJob(plan=plan, elements=elements, submitted=1.0, supervisor_pid=os.getpid())
    )
    assert status.main(["--all", "--json"]) == 0
    rows = {row["run_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert {k: (r["state"], r["job_id"], r["executor"]) for k, r in rows.items()} == {
        "loc0": ("RUNNING", "L3_0", "local"), "loc1": ("PENDING", "L3_1", "local"),
    }  # fmt: skip
    assert slurm_calls(fake_slurm) == []


def test_a_stopped_run_reads_stopped_with_the_command_that_resumes_it() -> None:
    """After slurm-stop Slurm says COMPLETED; the run's own state says it is resumable."""
    stopped = statusview.local_status(
        json.dumps({"status": "KILLED", "attempt": 2, "updated": SUBMITTED_EPOCH + 60}),
        2,
        None,
        stopped=True,
    )
    done = {"7": QueueEntry("7", "COMPLETED", "3:00", "vm")}
    row = statusview.build_row(record("a" * 32, "7", entry="proj.entry:train"), stopped, {}, done)
    assert (row.state, row.run_state) == ("COMPLETED", "STOPPED")
    assert row.resume == f"slurm-launch train --run-id {'a' * 32}"
    table = statusview.render_table([row]).splitlines()
    assert table[1].split()[3:5] == ["COMPLETED", "STOPPED"]
    assert (
        table[-1] == f"aaaaaaaa: stopped by slurm-stop at its last checkpoint; resume: {row.resume}"
    )
    cancelled = dataclasses.replace(stopped, stopped=False)
    assert statusview.build_row(record("a" * 32, "7"), cancelled, {}, done).run_state == "KILLED"
