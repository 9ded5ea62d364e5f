"""A rank that fails while srun ends the others (``--kill-on-bad-exit``): its failure is counted
as what it was, a crash, not as the preemption the others' SIGTERM looks like.

The decisions are pure (:mod:`blocktrain.restart.endings`, :func:`blocktrain.restart.crashes.
judge`); the protocol's side runs with real files and a real SIGTERM to this process, and the
task wrapper runs in a real shell.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from blocktrain import restart
from blocktrain.core.paths import RunFiles
from blocktrain.errors import RequeueRequested
from blocktrain.restart import requeue
from blocktrain.restart.crashes import ending_note, judge
from blocktrain.restart.endings import PeerEnding, describe_status, failed_ranks, peer_ending
from blocktrain.restart.worker import (
    _requeue_after_crash,  # pyright: ignore[reportPrivateUsage]
    let_rank_zero_report,
)

MISSING = "[Errno 2] No such file or directory: 'missing-data'"


def crash(**fields: object) -> restart.Crash:
    values: dict[str, object] = {
        "kind": "builtins.FileNotFoundError",
        "message": MISSING,
        "summary": f"FileNotFoundError: {MISSING}",
        "before_first_step": True,
        "job_key": "42",
        "restart_count": 1,
        "rank": 1,
        **fields,
    }
    return restart.Crash(**values)  # pyright: ignore[reportArgumentType]


def ending(
    *,
    asked: str | None = None,
    recorded: restart.Crash | None = None,
    exits: dict[int, int] | None = None,
    spent: dict[str, int] | None = None,
    crashes: int = 1,
) -> PeerEnding | None:
    return peer_ending(
        asked=asked,
        crash=recorded,
        exits=exits or {},
        restart_signal="USR2",
        budgets={"crash": crashes, "preemption": "unlimited"},
        spent=spent or {},
        run_id="abc123",
    )


# --- the decisions ---------------------------------------------------------------------------


def test_no_failure_on_record_leaves_the_sigterm_a_preemption() -> None:
    assert ending() is None
    # Ranks that left on a signal Slurm sends to all: a SIGTERM (143), the USR2 warning (140).
    assert ending(exits={1: 143, 2: 128 + signal.SIGUSR2}) is None


def test_a_requeue_the_attempt_asked_for_is_followed() -> None:
    assert ending(asked="crash", exits={1: 1}) == PeerEnding(cause="crash")
    assert ending(asked="preemption") == PeerEnding(cause="preemption")


def test_a_rank_killed_outright_is_a_crash_within_its_budget() -> None:
    assert ending(exits={1: 137}) == PeerEnding(cause="crash")
    assert ending(exits={1: 1}) == PeerEnding(cause="crash")  # it died before it could record
    spent = ending(exits={1: 137, 0: 143}, spent={"crash": 1, "preemption": 5})
    assert spent is not None
    assert spent.cause is None
    assert spent.reason == (
        "rank 1 killed by SIGKILL (status 137) without recording why (not requeued: the crash "
        "restart budget is spent, 1 of 1; raise restarts.crashes in the profile and relaunch "
        "with slurm-launch --run-id)"
    )


def test_a_crash_another_rank_recorded_ends_the_run_as_that_rank_judged_it() -> None:
    repeated = ending(recorded=crash(repeated=True), exits={1: 1})
    assert repeated == PeerEnding(cause=None, reason=restart.repeated_crash_note(crash(), "abc123"))
    # Recorded, not yet asked for: its own rank is still asking, or its budget is spent.
    assert ending(recorded=crash()) == PeerEnding(cause="crash")
    spent = ending(recorded=crash(), spent={"crash": 1})
    assert spent is not None
    assert spent.reason is not None
    assert spent.reason.startswith(f"rank 1: FileNotFoundError: {MISSING} (not requeued")


def test_exit_statuses_in_words() -> None:
    assert describe_status(137) == "killed by SIGKILL (status 137)"
    assert describe_status(134) == "killed by SIGABRT (status 134)"
    assert describe_status(1) == "exited with status 1"
    assert describe_status(200) == "exited with status 200"
    assert failed_ranks({3: 143, 1: 139, 0: 0}, "USR2") == {1: 139}


def test_a_crash_after_another_ranks_crash_in_the_same_attempt_follows_it() -> None:
    first = crash(repeated=True)
    after = crash(kind="builtins.RuntimeError", message="Connection closed by peer", rank=0)
    judged = judge(first, after, "abc123")
    assert (judged.first, judged.repeated, judged.crash) == (False, True, first)
    assert judged.note == restart.repeated_crash_note(first, "abc123")
    # The previous attempt's record: the guard compares, and this crash is the first.
    previous = crash(restart_count=0)
    judged = judge(previous, crash(), "abc123")
    assert (judged.first, judged.repeated) == (True, True)
    assert judged.crash == crash(repeated=True)
    assert judge(None, crash(), "abc123").first


def test_the_watcher_names_the_guards_line_of_the_jobs_repeated_crash() -> None:
    note = restart.repeated_crash_note(crash(), "abc123")
    assert ending_note(crash(repeated=True), "42", "abc123") == note
    assert ending_note(crash(), "42", "abc123") is None  # requeued, or its budget was spent
    assert ending_note(crash(repeated=True), "43", "abc123") is None  # an earlier job's
    assert ending_note(None, "42", "abc123") is None


def test_a_record_without_the_new_fields_reads_as_rank_0_unjudged() -> None:
    raw = json.loads(crash().to_json())
    del raw["rank"], raw["repeated"]
    assert restart.Crash.from_json(json.dumps(raw)) == crash(rank=0)


# --- the protocol, with files and signals ----------------------------------------------------


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> restart.RestartConfig:
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    made = restart.RestartConfig(
        run_dir=tmp_path / "runs" / "abc123",
        marker_dir=tmp_path / "requeue",
        job_key="42",
        budgets={"crash": 1, "preemption": "unlimited"},
    )
    made.run_dir.mkdir(parents=True)
    made.marker_dir.mkdir()
    return made


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    signal.sigtimedwait([], 0)  # the handler runs before this returns


def _killed(config: restart.RestartConfig, rank: int, status: int) -> None:
    """What the task wrapper of ``rank`` leaves when its Python dies with ``status``."""
    path = requeue.exit_record(config.marker_dir, config.job_key, config.restart_count, rank)
    path.write_text(f"{status}\n")


def _marker(config: restart.RestartConfig) -> object:
    return json.loads((config.marker_dir / config.job_key).read_text())


@pytest.mark.parametrize("polled", [False, True])
def test_srun_ending_the_survivor_of_a_killed_rank_requeues_it_as_a_crash(
    config: restart.RestartConfig, polled: bool
) -> None:
    _killed(config, 1, 137)
    with restart.protocol(config) as state:
        if polled:
            restart.signalled()  # training: no step boundary can come without rank 1
        with pytest.raises(RequeueRequested, match="crash"):
            _sigterm_self()
    assert state.left_early
    assert _marker(config) == {"cause": "crash"}
    assert restart.read_counts(config.run_dir) == {"crash": 1}
    # The next attempt killed alike finds the crash budget spent: the run ends FAILED.
    later = dataclasses.replace(config, restart_count=1)
    _killed(later, 1, 137)
    with restart.protocol(later), pytest.raises(restart.RankFailedError, match="SIGKILL"):
        _sigterm_self()
    assert restart.read_counts(config.run_dir) == {"crash": 1}


def test_a_sigterm_to_every_rank_stays_a_preemption(config: restart.RestartConfig) -> None:
    _killed(config, 1, 143)  # rank 1 left on its own SIGTERM (before its handlers, say)
    _killed(dataclasses.replace(config, job_key="41"), 1, 137)  # another job's
    with restart.protocol(config), pytest.raises(RequeueRequested, match="preemption"):
        _sigterm_self()
    assert restart.read_counts(config.run_dir) == {"preemption": 1}
    # Training: the flag only, for the ranks to agree at the next step boundary.
    later = dataclasses.replace(config, restart_count=1)
    with restart.protocol(later) as state:
        restart.signalled()
        _sigterm_self()
        assert state.received == "TERM"
        assert not state.left_early


def test_one_ranks_repeated_crash_ends_the_attempt_of_the_others_failed(
    config: restart.RestartConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 crashes alike before its first step in two attempts; rank 0, ended by srun each
    time, leaves as rank 1's judgement says: requeued as a crash, then FAILED with its note."""
    first, second = (dataclasses.replace(config, restart_count=n) for n in (0, 1))
    for attempt, expected in ((first, RequeueRequested), (second, restart.RankFailedError)):
        monkeypatch.setenv("SLURM_PROCID", "1")
        with restart.protocol(attempt):
            _requeue_after_crash(attempt, FileNotFoundError(2, "No such file", "missing-data"))
        _killed(attempt, 1, 1)
        monkeypatch.setenv("SLURM_PROCID", "0")
        with restart.protocol(attempt), pytest.raises(expected) as left:
            _sigterm_self()
    assert restart.read_counts(config.run_dir) == {"crash": 1}
    assert str(left.value).endswith(
        "(not requeued: the previous attempt failed the same way before its first step; fix "
        "the cause, then run slurm-launch --run-id abc123)"
    )
    recorded = restart.read_crash(config.run_dir)
    assert recorded is not None
    assert (recorded.rank, recorded.repeated, recorded.restart_count) == (1, True, 1)
    assert restart.read_requests(config.run_dir) == {"42": {"0": "crash"}}  # none for attempt 1


def test_a_rank_recording_its_own_crash_keeps_it_a_crash(config: restart.RestartConfig) -> None:
    """Both ranks crash; the other one, faster, exits and srun sends this one a SIGTERM while it
    is still on its way out (the Slack post, the MLflow upload)."""
    error = RuntimeError("the loader failed")
    with restart.protocol(config) as state:
        judged = restart.judge_crash(error)  # what the notifier asks first
        assert judged is not None
        assert judged.first
        _killed(config, 1, 1)
        _sigterm_self()  # noted only
        assert state.received == "TERM"
        assert not state.left_early
        _requeue_after_crash(config, error)
    assert _marker(config) == {"cause": "crash"}
    assert restart.read_counts(config.run_dir) == {"crash": 1}


def test_a_crash_that_follows_another_ranks_keeps_the_first_record(
    config: restart.RestartConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_PROCID", "1")
    with restart.protocol(config):
        _requeue_after_crash(config, KeyError("lr"))
    monkeypatch.setenv("SLURM_PROCID", "0")
    with restart.protocol(config):
        _requeue_after_crash(config, RuntimeError("Connection closed by peer"))
    recorded = json.loads(RunFiles(config.run_dir).last_crash.read_text())
    assert (recorded["summary"], recorded["rank"]) == ("KeyError: 'lr'", 1)
    assert restart.read_counts(config.run_dir) == {"crash": 1}


def test_the_protocols_own_endings_are_no_crash_to_record(config: restart.RestartConfig) -> None:
    with restart.protocol(config):
        _requeue_after_crash(config, restart.RankFailedError("rank 1 killed by SIGKILL"))
        _requeue_after_crash(config, restart.RestartBudgetError("timeout restart budget spent"))
    assert not RunFiles(config.run_dir).last_crash.exists()
    assert restart.read_counts(config.run_dir) == {}


# --- the task wrapper, in a real shell -------------------------------------------------------


def _task(marker_dir: Path, body: str, **env: str) -> subprocess.Popen[bytes]:
    words = [*requeue.task_wrapper(marker_dir), "sh", "-c", body]
    slurm = {"SLURM_JOB_ID": "42", "SLURM_PROCID": "1", **env}
    return subprocess.Popen(words, env={**os.environ, **slurm})


def test_the_wrapper_writes_a_failed_tasks_status_and_passes_it_on(
    config: restart.RestartConfig,
) -> None:
    assert _task(config.marker_dir, "kill -9 $$", SLURM_RESTART_COUNT="1").wait() == 137
    assert _task(config.marker_dir, "exit 0", SLURM_PROCID="0").wait() == 0
    assert requeue.task_exits(config) == {}  # attempt 0 of job 42: none failed
    other = dataclasses.replace(config, job_key="7_3")
    assert (
        _task(config.marker_dir, "exit 3", SLURM_ARRAY_JOB_ID="7", SLURM_ARRAY_TASK_ID="3").wait()
        == 3
    )
    assert requeue.task_exits(other) == {1: 3}
    at_one = dataclasses.replace(config, restart_count=1)
    assert requeue.task_exits(at_one) == {1: 137}
    requeue.remove_earlier_exits(dataclasses.replace(config, restart_count=2))
    assert requeue.task_exits(at_one) == {}


def test_the_wrapper_outlives_a_signal_to_the_whole_step(config: restart.RestartConfig) -> None:
    """Slurm signals every process of a step: the shell waits for its Python, which leaves on
    the SIGTERM in its own time, and reports that Python's status."""
    task = _task(config.marker_dir, "trap 'sleep 0.3; exit 143' TERM; sleep 2 & wait")
    time.sleep(0.5)
    _signal_tree(task.pid)
    assert task.wait(timeout=10) == 143
    assert requeue.task_exits(config) == {1: 143}


def _signal_tree(pid: int) -> None:
    """SIGTERM to ``pid`` and its children, as proctrack signals a step's processes."""
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for target in [pid, *map(int, children)]:
        os.kill(target, signal.SIGTERM)


def test_a_crashed_rank_waits_for_rank_0_to_end_and_no_longer(
    config: restart.RestartConfig,
) -> None:
    started = time.monotonic()
    let_rank_zero_report(config, grace_s=0.5)  # rank 0 never ends: the grace bounds the wait
    assert 0.5 <= time.monotonic() - started < 5
    _killed(config, 0, 1)  # rank 0 crashed too, and reported
    started = time.monotonic()
    let_rank_zero_report(config, grace_s=30)
    assert time.monotonic() - started < 5
