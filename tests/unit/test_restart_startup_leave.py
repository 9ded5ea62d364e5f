"""A rank that leaves its attempt alone while it starts: it asks for the requeue whatever its
rank, the attempt spends one unit however many ranks ask, and the ranks waiting for it to meet
give up instead of waiting in torch's rendezvous for the whole process group timeout."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blocktrain import restart
from blocktrain.core.paths import RunFiles
from blocktrain.distributed import free_port
from blocktrain.errors import RequeueRequested


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> restart.RestartConfig:
    for name in ("RANK", "SLURM_PROCID", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    made = restart.RestartConfig(
        time_limit_s=3600,
        lead_s=120,
        run_dir=tmp_path / "run",
        marker_dir=tmp_path / "requeue",
        job_key="42",
    )
    made.run_dir.mkdir()
    return made


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    monkeypatch.setenv("SLURM_PROCID", str(rank))
    monkeypatch.setenv("SLURM_NTASKS", "2")


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    signal.sigtimedwait([], 0)  # the handler runs before this returns


def _requests(config: restart.RestartConfig) -> object:
    return json.loads(RunFiles(config.run_dir).requeue_requests.read_text())


def test_any_rank_signalled_first_asks_and_the_attempt_spends_one_unit(
    config: restart.RestartConfig, monkeypatch: pytest.MonkeyPatch
):
    _as_rank(monkeypatch, 1)
    with restart.protocol(config) as state, pytest.raises(RequeueRequested, match="preemption"):
        _sigterm_self()
    assert state.left_early
    assert json.loads((config.marker_dir / "42").read_text()) == {"cause": "preemption"}
    assert restart.read_counts(config.run_dir) == {"preemption": 1}
    _as_rank(monkeypatch, 0)  # a real preemption signals every rank
    with restart.protocol(config), pytest.raises(RequeueRequested, match="preemption"):
        _sigterm_self()
    assert restart.read_counts(config.run_dir) == {"preemption": 1}
    assert _requests(config) == {"42": {"0": "preemption"}}


def _leave_and_clean_up() -> None:
    try:
        _sigterm_self()
    finally:
        _sigterm_self()  # the way out (closing the run, say) goes on undisturbed


def test_a_second_sigterm_does_not_break_into_the_way_out(config: restart.RestartConfig):
    with restart.protocol(config), pytest.raises(RequeueRequested):
        _leave_and_clean_up()
    assert restart.read_counts(config.run_dir) == {"preemption": 1}


def test_a_crash_after_another_ranks_request_spends_nothing(config: restart.RestartConfig):
    restart.request_requeue(config, "preemption", {})
    (config.marker_dir / "42").unlink()  # the worst case: rank 0 took it for a stale one
    restart.request_requeue(config, "crash", restart.read_counts(config.run_dir))
    assert restart.read_counts(config.run_dir) == {"preemption": 1}
    assert json.loads((config.marker_dir / "42").read_text()) == {"cause": "preemption"}
    later = dataclasses.replace(config, restart_count=1)
    restart.request_requeue(later, "crash", restart.read_counts(config.run_dir))
    assert restart.read_counts(config.run_dir) == {"preemption": 1, "crash": 1}


def test_a_rank_waiting_for_the_others_leaves_once_the_attempt_asked(
    config: restart.RestartConfig, monkeypatch: pytest.MonkeyPatch
):
    with restart.protocol(config) as state:
        restart.leave_if_requeued()  # nothing asked: it waits on
        restart.request_requeue(config, "preemption", {})  # as rank 1 does, leaving
        (config.marker_dir / "42").unlink()
        with pytest.raises(RequeueRequested, match="preemption"):
            restart.leave_if_requeued()
        assert state.left_early
    assert (config.marker_dir / "42").exists()
    assert restart.read_counts(config.run_dir) == {"preemption": 1}
    _as_rank(monkeypatch, 1)
    other_job = dataclasses.replace(config, job_key="77")
    with restart.protocol(other_job):
        restart.leave_if_requeued()  # another job's request is not this attempt's


MEETING = """
import os, signal, sys, time
from blocktrain.distributed import process_group
from blocktrain.errors import RequeueRequested

def handler(signum, frame):
    raise RequeueRequested("signalled")

signal.signal(signal.SIGTERM, handler)
os.environ.update(RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
started = None

def poll():
    global started
    if started is None:
        started = time.monotonic()
        print("waiting", flush=True)
    if sys.argv[2] == "poll" and time.monotonic() - started > 1.0:
        raise RequeueRequested("given up")

try:
    with process_group(timeout_s=120, while_meeting=poll):
        print("met")
except RequeueRequested as exc:
    print(f"left: {exc} after {time.monotonic() - started:.1f} s", flush=True)
    os._exit(143)
"""


@pytest.mark.parametrize("how", ["poll", "sigterm"])
def test_a_rank_that_waits_alone_for_the_others_is_not_deaf(how: str):
    """Rank 0 of two waits for rank 1, which never comes: the poll or a SIGTERM ends the wait,
    where torch alone would wait for the whole timeout without running any handler."""
    meeting = subprocess.Popen(
        [sys.executable, "-c", MEETING, str(free_port()), how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert meeting.stdout is not None
        assert meeting.stdout.readline() == "waiting\n"
        waiting = time.monotonic()
        if how == "sigterm":
            time.sleep(1.0)
            meeting.send_signal(signal.SIGTERM)
        out, err = meeting.communicate(timeout=60)
    finally:
        meeting.kill()
    assert meeting.returncode == 143, err
    reason = "given up" if how == "poll" else "signalled"
    assert out.startswith(f"left: {reason} after"), out
    assert time.monotonic() - waiting < 10.0


EXIT_STATUS = """
from blocktrain.distributed import exit_without_finalizing
exit_without_finalizing()
exit_without_finalizing(143)  # the latest call's status
"""


def test_exit_without_finalizing_ends_with_the_status_asked():
    done = subprocess.run(
        [sys.executable, "-c", EXIT_STATUS], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 143, done.stderr
