"""Run records under concurrency: 50 processes writing and updating at once lose nothing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from blocktrain.errors import BlocktrainError
from blocktrain.launch.records.store import (
    JobEntry,
    Layout,
    RunRecord,
    all_records,
    find_runs,
    read_record,
    update_record,
    write_record,
)

WORKERS = 50


def _record(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        entry="m:train",
        args={"steps": 1},
        profile="local",
        profile_values={},
        launch_id="L",
        created="2026-11-23T10:00:00+0000",
        tracking_uri="sqlite:///x.db",
        experiment="e",
    )


def _append_job(root: str, run_id: str, job_id: str) -> None:
    update_record(
        Layout(Path(root)),
        run_id,
        lambda r: r.jobs.append(JobEntry(job_id=job_id, submitted="now")),
    )


def _write_new(root: str, index: int) -> None:
    write_record(Layout(Path(root)), _record(f"{index:032x}"))


def _run_all(target: object, args: list[tuple[object, ...]]) -> None:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=target, args=a) for a in args]  # pyright: ignore[reportArgumentType]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0


def test_concurrent_updates_of_one_record_lose_nothing(tmp_path: Path):
    layout = Layout(tmp_path)
    write_record(layout, _record("a" * 32))
    _run_all(_append_job, [(str(tmp_path), "a" * 32, str(1000 + i)) for i in range(WORKERS)])
    jobs = read_record(layout, "a" * 32).jobs
    assert sorted(j.job_id for j in jobs) == [str(1000 + i) for i in range(WORKERS)]


def test_concurrent_new_records_are_all_readable(tmp_path: Path):
    _run_all(_write_new, [(str(tmp_path), i) for i in range(WORKERS)])
    found = {r.run_id for r in all_records(Layout(tmp_path))}
    assert found == {f"{i:032x}" for i in range(WORKERS)}
    assert not list((tmp_path / ".blocktrain").rglob("*.tmp*"))  # no temporary file left


def test_find_runs_by_prefix_and_job_id(tmp_path: Path):
    layout = Layout(tmp_path)
    first, second = _record("abcdef12" + "0" * 24), _record("abcdef34" + "0" * 24)
    first.jobs.append(JobEntry(job_id="120_3", submitted="now"))
    second.jobs.append(JobEntry(job_id="121", submitted="now"))
    write_record(layout, first)
    write_record(layout, second)
    assert [r.run_id for r in find_runs(layout, "abcdef12")] == [first.run_id]
    assert {r.run_id for r in find_runs(layout, "abcdef")} == {first.run_id, second.run_id}
    assert find_runs(layout, "abcde") == []  # prefixes of 6+ characters only
    assert [r.run_id for r in find_runs(layout, "121")] == [second.run_id]
    assert [r.run_id for r in find_runs(layout, "120_3")] == [first.run_id]
    assert {r.run_id for r in find_runs(layout, "120")} == {first.run_id}
    assert find_runs(layout, "999") == []


def test_unreadable_record_is_a_clear_error(tmp_path: Path):
    layout = Layout(tmp_path)
    layout.run_dir("b" * 32).mkdir(parents=True)
    layout.record_path("b" * 32).write_text("{not json")
    with pytest.raises(BlocktrainError, match="unreadable"):
        read_record(layout, "b" * 32)
    with pytest.raises(BlocktrainError, match="slurm-status --all"):
        read_record(layout, "c" * 32)
    assert list(all_records(layout)) == []
