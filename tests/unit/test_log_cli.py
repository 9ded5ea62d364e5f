"""slurm-log on a .blocktrain tree built by hand: records, attempt folders and log files."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from blocktrain.cli import log
from blocktrain.core.paths import Layout
from blocktrain.launch.records.store import JobEntry, RunRecord, write_record
from blocktrain.launch.slurm import commands
from blocktrain.launch.slurm.commands import QueueEntry, SlurmError

RUN = "0123456789abcdef0123456789abcdef"
SUBMITTED = "2026-01-10T12:00:00+0000"
SUBMITTED_EPOCH = 1768046400.0


def add_record(root: Path, run_id: str, job_id: str, array_index: int | None = None) -> None:
    write_record(
        Layout(root),
        RunRecord(
            run_id=run_id,
            entry="shapes_demo:train",
            args={},
            profile="local",
            profile_values={},
            launch_id="20260110-120000-abcdef",
            created=SUBMITTED,
            tracking_uri="sqlite:///x.db",
            experiment="proj",
            array_index=array_index,
            jobs=[JobEntry(job_id=job_id, submitted=SUBMITTED)],
        ),
    )


def add_attempt(root: Path, attempt: int, files: dict[str, str], run_id: str = RUN) -> Path:
    folder = Layout(root).run_logs(run_id) / f"attempt-{attempt}"
    folder.mkdir(parents=True)
    facts = {"attempt": attempt, "host": "vm", "job_id": "42", "started": f"T{attempt}"}
    (folder / "attempt.json").write_text(json.dumps(facts))
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def set_status(root: Path, status: str, attempt: int, run_id: str = RUN) -> None:
    record = {"run_id": run_id, "attempt": attempt, "status": status, "metrics": {}}
    path = Layout(root).run_logs(run_id) / "status.json"
    path.write_text(json.dumps({**record, "updated": time.time()}))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose run RUN (job 42) has two attempts with logs of ranks 0 and 1."""
    (tmp_path / "pyproject.toml").write_text("[tool.blocktrain]\n")
    add_record(tmp_path, RUN, "42")
    add_attempt(
        tmp_path, 1, {"rank-0.out": "a1 r0\n", "rank-0.err": "e1\n", "rank-1.out": "a1 r1\n"}
    )
    add_attempt(tmp_path, 2, {"rank-0.out": "a2 r0\n", "rank-1.out": "a2 r1\n"})
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path / "src")  # the project root is found from a subfolder
    return tmp_path


def test_attempts_are_merged_in_order_with_headers_on_stderr(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert log.main([RUN[:8]]) == 0
    out, err = capsys.readouterr()
    assert out == "a1 r0\na2 r0\n"
    assert err.splitlines() == [
        "==> attempt 1 (job 42, host vm, started T1) <==",
        "==> attempt 2 (job 42, host vm, started T2) <==",
    ]


def test_rank_err_and_attempt_choose_the_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert log.main([RUN, "--rank", "1", "--attempt", "2"]) == 0
    assert capsys.readouterr().out == "a2 r1\n"
    assert log.main(["42", "--err"]) == 0
    out, err = capsys.readouterr()
    assert out == "e1\n"
    assert err.splitlines()[1] == "==> attempt 2 (job 42, host vm, started T2, no rank-0.err) <=="


def test_a_job_id_of_an_array_must_name_one_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "f" * 32
    add_record(project, other, "120_0", array_index=0)
    add_record(project, "e" * 32, "120_1", array_index=1)
    add_attempt(project, 1, {"rank-0.out": "element 0\n"}, run_id=other)
    assert log.main(["120"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slurm-log: error: '120' matches 2 runs: ")
    assert "ffffffff (job 120_0)" in err
    assert len(err.splitlines()) == 1
    assert log.main(["120_0"]) == 0
    assert capsys.readouterr().out == "element 0\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing"], "no run or job matches 'nothing'; see slurm-status --all"),
        ([RUN, "--attempt", "3"], f"run {RUN} has no attempt 3; it has 1, 2"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert log.main(args) == 2
    assert capsys.readouterr().err == f"slurm-log: error: {message}\n"


def test_no_logs_yet_says_the_job_is_pending(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_record(project, "d" * 32, "77")
    # A fake squeue answer: the real one is exercised by the integration tests.
    monkeypatch.setattr(commands, "squeue", lambda ids: [QueueEntry("77", "PENDING", "0:00", "")])
    assert log.main(["d" * 8]) == 2
    assert capsys.readouterr().err == (
        f"slurm-log: error: run {'d' * 32} has no logs yet: job 77 is PENDING\n"
    )


def test_no_logs_and_no_queued_job_points_at_the_submission_logs(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_record(project, "d" * 32, "77")

    def unreachable(ids: object) -> list[QueueEntry]:
        raise SlurmError("squeue -h failed: Unable to contact slurm controller")

    monkeypatch.setattr(commands, "squeue", unreachable)
    assert log.main(["d" * 8, "--follow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slurm-log: error: run {'d' * 32} has no logs: job 77 is not queued")
    assert "launches/20260110-120000-abcdef/submitit" in err


def test_follow_prints_growth_and_next_attempts_until_the_run_ends(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(log, "POLL_S", 0.01)
    set_status(project, "SCHEDULED", 2)  # requeued after attempt 2: not the end

    def job() -> None:
        time.sleep(0.1)
        with (Layout(project).run_logs(RUN) / "attempt-2" / "rank-0.out").open("a") as out:
            out.write("a2 more\n")
        time.sleep(0.1)
        folder = add_attempt(project, 3, {})
        time.sleep(0.1)
        (folder / "rank-0.out").write_text("a3 r0\n")
        time.sleep(0.1)
        with (folder / "rank-0.out").open("a") as out:
            out.write("a3 last\n")
        set_status(project, "FINISHED", 3)

    writer = threading.Thread(target=job)
    writer.start()
    assert log.main([RUN, "--follow"]) == 0
    writer.join()
    out, err = capsys.readouterr()
    assert out == "a1 r0\na2 r0\na2 more\na3 r0\na3 last\n"
    assert [line.split(" (")[0] for line in err.splitlines()] == [
        "==> attempt 1",
        "==> attempt 2",
        "==> attempt 3",
    ]


def test_follow_of_one_attempt_stops_when_the_next_begins(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(log, "POLL_S", 0.01)
    assert log.main([RUN, "--follow", "--attempt", "1"]) == 0
    assert capsys.readouterr().out == "a1 r0\n"


def test_follow_waits_for_a_queued_job_to_start(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(log, "POLL_S", 0.01)
    add_record(project, "d" * 32, "77")
    monkeypatch.setattr(commands, "squeue", lambda ids: [QueueEntry("77", "PENDING", "0:00", "")])

    def start() -> None:
        time.sleep(0.1)
        add_attempt(project, 1, {"rank-0.out": "started\n"}, run_id="d" * 32)
        set_status(project, "FINISHED", 1, run_id="d" * 32)

    starter = threading.Thread(target=start)
    starter.start()
    assert log.main(["d" * 8, "--follow"]) == 0
    starter.join()
    out, err = capsys.readouterr()
    assert out == "started\n"
    assert err.splitlines()[0] == "slurm-log: job 77 is PENDING; waiting for it to start"


def place_ranks(root: Path, attempt: int, nodes: dict[int, str]) -> None:
    """The records each rank leaves: which node it ran on in this attempt."""
    folder = Layout(root).run_logs(RUN) / f"attempt-{attempt}"
    for rank, node in nodes.items():
        record = {"rank": rank, "node": node, "node_rank": rank // 2, "local_rank": rank % 2}
        (folder / f"rank-{rank}.json").write_text(json.dumps(record))


def test_node_picks_the_ranks_that_ran_there_in_each_attempt(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = Layout(project).run_logs(RUN)
    for attempt in (1, 2):
        for rank in (2, 3):
            (folder / f"attempt-{attempt}" / f"rank-{rank}.out").write_text(f"a{attempt} r{rank}\n")
    place_ranks(project, 1, {0: "node1", 1: "node1", 2: "node2", 3: "node2"})
    place_ranks(project, 2, {0: "node1", 1: "node1", 2: "node3", 3: "node3"})  # node2 was lost
    (folder / "attempt-2" / "rank-3.json").write_text("{")  # torn: not counted
    assert log.main([RUN, "--node", "node2"]) == 0
    out, err = capsys.readouterr()
    assert out == "a1 r2\na1 r3\n"
    assert err.splitlines() == [
        "==> attempt 1, rank 2 on node2 (job 42, started T1) <==",
        "==> attempt 1, rank 3 on node2 (job 42, started T1) <==",
    ]
    assert log.main([RUN, "--node", "node3", "--rank", "2"]) == 0
    assert capsys.readouterr().out == "a2 r2\n"
    assert log.main([RUN, "--node", "node1", "--attempt", "2"]) == 0
    assert capsys.readouterr().out == "a2 r0\na2 r1\n"


def test_node_that_ran_nothing_names_the_nodes(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    place_ranks(project, 1, {0: "node1", 1: "node2"})
    assert log.main([RUN, "--node", "node9"]) == 2
    err = capsys.readouterr().err
    assert err == "slurm-log: error: no rank ran on node 'node9'; the run's nodes: node1, node2\n"
    assert log.main([RUN, "--node", "node2", "--rank", "0"]) == 2
    assert "rank 0 never ran on node 'node2'" in capsys.readouterr().err


def test_follow_with_node_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        log.main([RUN, "--node", "node1", "--follow"])
    assert exited.value.code == 2
    assert "--follow follows one rank" in capsys.readouterr().err
