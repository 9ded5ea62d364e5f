"""The crash-loop guard: a crash that repeats the previous attempt's before any step is not
requeued. The decision is pure; the worker's side runs with real files in a run folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from blocktrain import restart
from blocktrain.core.jobenv import JobContext
from blocktrain.core.paths import RunFiles
from blocktrain.core.redact import Redactor
from blocktrain.launch import statusview
from blocktrain.launch.records.store import JobEntry, RunRecord
from blocktrain.notify.messages import crashed_message
from blocktrain.restart.worker import _requeue_after_crash  # pyright: ignore[reportPrivateUsage]

MISSING = "[Errno 2] No such file or directory: '/data/train'"


def crash(**fields: object) -> restart.Crash:
    values: dict[str, object] = {
        "kind": "builtins.FileNotFoundError",
        "message": MISSING,
        "summary": f"FileNotFoundError: {MISSING}",
        "before_first_step": True,
        "job_key": "42",
        "restart_count": 1,
        **fields,
    }
    return restart.Crash(**values)  # pyright: ignore[reportArgumentType]


def test_the_same_crash_before_the_first_step_in_consecutive_attempts_repeats() -> None:
    assert restart.repeats_previous(crash(restart_count=0), crash(restart_count=1))


@pytest.mark.parametrize(
    ("previous", "current", "why"),
    [
        (None, crash(), "no previous crash"),
        (crash(restart_count=0), crash(before_first_step=False), "progress in this attempt"),
        (crash(restart_count=0, before_first_step=False), crash(), "progress in the previous"),
        (crash(restart_count=0), crash(message="[Errno 2] other"), "another message"),
        (crash(restart_count=0), crash(kind="builtins.PermissionError"), "another type"),
        (crash(restart_count=0), crash(restart_count=2), "an attempt in between"),
        (crash(restart_count=0, job_key="41"), crash(), "another job: a relaunch"),
    ],
)
def test_other_crashes_keep_their_budget(
    previous: restart.Crash | None, current: restart.Crash, why: str
) -> None:
    assert not restart.repeats_previous(previous, current), why


def test_a_crash_is_recorded_by_type_and_message_and_read_back(tmp_path: Path) -> None:
    config = restart.RestartConfig(
        run_dir=tmp_path / "run", marker_dir=tmp_path / "requeue", job_key="42", restart_count=3
    )
    config.run_dir.mkdir()
    recorded = restart.crash_of(
        FileNotFoundError(2, "No such file or directory", "/data/train"),
        before_first_step=True,
        config=config,
    )
    assert recorded == crash(restart_count=3)
    restart.keep_crash(config, recorded)
    assert restart.read_crash(config.run_dir) == recorded


@pytest.mark.parametrize("text", ["", "{", "[]", '{"kind": "x"}', '{"restart_count": []}'])
def test_a_torn_or_foreign_record_counts_as_no_previous_crash(tmp_path: Path, text: str) -> None:
    RunFiles(tmp_path).last_crash.write_text(text)
    assert restart.read_crash(tmp_path) is None


def test_the_restart_count_comes_from_slurm() -> None:
    env = {"BLOCKTRAIN_RUN_DIR": "/r", "BLOCKTRAIN_REQUEUE_DIR": "/q", "SLURM_RESTART_COUNT": "2"}
    config = restart.RestartConfig.from_environ(env)
    assert config is not None
    assert config.restart_count == 2


# --- the worker's side: rank 0 judges, records and requeues (or not) ---------------------


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> restart.RestartConfig:
    for name in ("RANK", "SLURM_PROCID", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    made = restart.RestartConfig(
        run_dir=tmp_path / "runs" / "abc123",
        marker_dir=tmp_path / "requeue",
        job_key="42",
        budgets={"crash": 3},
    )
    made.run_dir.mkdir(parents=True)
    return made


def attempt(config: restart.RestartConfig, number: int) -> restart.RestartConfig:
    """The same job's configuration in its attempt ``number`` (Slurm counts requeues)."""
    (config.marker_dir / config.job_key).unlink(missing_ok=True)
    return dataclasses.replace(config, restart_count=number - 1)


def crash_in(config: restart.RestartConfig, error: Exception, *, steps: int = 0) -> bool:
    """Crash one attempt with ``error`` after ``steps`` step boundaries; whether it requeued."""
    with restart.protocol(config):
        for _ in range(steps):
            restart.should_stop()
        _requeue_after_crash(config, error)
    return (config.marker_dir / config.job_key).exists()


def missing() -> FileNotFoundError:
    return FileNotFoundError(2, "No such file or directory", "/data/train")


def test_a_deterministic_crash_stops_requeueing_at_the_second_attempt(
    config: restart.RestartConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crash_in(attempt(config, 1), missing())
    assert not crash_in(attempt(config, 2), missing())
    assert restart.read_counts(config.run_dir) == {"crash": 1}
    note = capsys.readouterr().err.strip()
    assert note == (
        "blocktrain: FileNotFoundError: [Errno 2] No such file or directory: '/data/train' "
        "(not requeued: the previous attempt failed the same way before its first step; "
        "fix the cause, then run slurm-launch --run-id abc123)"
    )


def test_a_crash_after_progress_keeps_its_budget(config: restart.RestartConfig) -> None:
    assert crash_in(attempt(config, 1), missing())
    assert crash_in(attempt(config, 2), missing(), steps=1)
    assert crash_in(attempt(config, 3), missing())
    assert restart.read_counts(config.run_dir) == {"crash": 3}
    assert not crash_in(attempt(config, 4), missing())  # the guard, before the spent budget


def test_a_different_crash_keeps_its_budget(config: restart.RestartConfig) -> None:
    assert crash_in(attempt(config, 1), missing())
    assert crash_in(attempt(config, 2), KeyError("lr"))
    assert (
        json.loads(RunFiles(config.run_dir).last_crash.read_text())["summary"] == "KeyError: 'lr'"
    )


def test_every_caller_gets_the_first_judgement_of_an_error(config: restart.RestartConfig) -> None:
    first = attempt(config, 1)
    restart.keep_crash(first, restart.crash_of(missing(), before_first_step=True, config=first))
    second, error = attempt(config, 2), missing()
    with restart.protocol(second):
        judged = restart.judge_crash(error)
        assert judged is not None
        assert judged.repeated
        # The worker records this attempt's crash; a later question gets the same answer.
        restart.keep_crash(second, judged.crash)
        assert restart.judge_crash(error) is judged
    assert restart.judge_crash(error) is None  # outside a launched job


# --- what people see: slurm-status and Slack --------------------------------------------


def test_slurm_status_shows_the_reason_of_the_latest_job() -> None:
    record = RunRecord(
        run_id="abc12345ffff", name=None, entry="m:f", args={}, profile="local",
        profile_values={}, launch_id="l", created="2026-01-10T12:00:00+0000",
        tracking_uri="sqlite:///x.db", experiment="e",
        jobs=[JobEntry(job_id="100", submitted="2026-01-10T12:00:00+0000")],
    )  # fmt: skip
    text = json.dumps({"status": "FAILED", "attempt": 2, "updated": 1768046460.0, "reason": "R"})
    local = statusview.local_status(text, 2, None)
    row = statusview.build_row(record, local, {}, {})
    assert (row.state, row.reason) == ("FAILED", "R")
    assert statusview.render_table([row]).splitlines()[-2:] == [
        "abc12345: R",
        "abc12345: resume from its newest checkpoint: slurm-launch f --run-id abc12345ffff",
    ]
    stale = dataclasses.replace(local, updated=0.0)  # written before the latest submission
    assert statusview.build_row(record, stale, {}, {}).reason is None


def test_the_crash_message_says_why_it_is_not_requeued() -> None:
    note = restart.repeated_crash_note(crash(), "abc123")
    payload = crashed_message(
        "train",
        JobContext(host="node07", job_id="4242", attempt=2),
        missing(),
        duration_s=3,
        run_url=None,
        mention=None,
        redact=Redactor.from_environ({}),
        note=note,
    )
    shown = [block["text"]["text"] for block in payload["blocks"]]  # pyright: ignore
    assert shown[0].startswith(":x: *train* crashed after 3s on node07, job 4242 (attempt 2)")
    assert shown[1] == f":no_entry: {note}"


def test_a_spent_restart_budget_ends_the_run_without_spending_the_crash_budget(
    config: restart.RestartConfig,
) -> None:
    spent = restart.RestartBudgetError("timeout restart budget spent (2 of 2)")
    assert not crash_in(attempt(config, 1), spent, steps=3)
    assert restart.read_counts(config.run_dir) == {}
