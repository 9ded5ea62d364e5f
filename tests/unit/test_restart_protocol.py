"""The restart protocol's signal handling in one process (real signals, no Slurm)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest

from blocktrain import restart
from blocktrain.core.paths import RunFiles
from blocktrain.errors import RequeueRequested, StopRequested, Terminated
from blocktrain.launch.profile import Profile
from blocktrain.restart.jobspec import JobSpec


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> restart.RestartConfig:
    for name in ("RANK", "SLURM_PROCID", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    return restart.RestartConfig(
        time_limit_s=3600,
        lead_s=120,
        run_dir=tmp_path / "run",
        marker_dir=tmp_path / "requeue",
        job_key="42",
        budgets={"preemption": 1, "timeout": "unlimited", "crash": 0},
    )


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    signal.sigtimedwait([], 0)  # the handler runs before this returns


def test_sigterm_while_starting_requeues_as_a_preemption(config: restart.RestartConfig):
    config.run_dir.mkdir()
    with restart.protocol(config), pytest.raises(RequeueRequested, match="preemption"):
        _sigterm_self()
    assert json.loads((config.marker_dir / "42").read_text()) == {"cause": "preemption"}
    assert restart.read_counts(config.run_dir) == {"preemption": 1}


def test_sigterm_while_starting_with_the_budget_spent_terminates(config: restart.RestartConfig):
    config.run_dir.mkdir()
    RunFiles(config.run_dir).restart_counts.write_text('{"preemption": 1}')
    with restart.protocol(config), pytest.raises(Terminated, match="budget is spent"):
        _sigterm_self()
    assert not (config.marker_dir / "42").exists()


def test_signals_after_the_first_poll_only_set_the_flag(config: restart.RestartConfig):
    config.run_dir.mkdir()
    with restart.protocol(config):
        assert restart.should_stop() is False
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)
        assert restart.should_stop() is True
        with pytest.raises(RequeueRequested, match="preemption"):
            restart.stop_now()
    assert restart.read_counts(config.run_dir) == {"preemption": 1}


def test_stop_marker_ends_without_requeue(config: restart.RestartConfig):
    config.run_dir.mkdir()
    RunFiles(config.run_dir).stop_marker.touch()
    with restart.protocol(config):
        restart.should_stop()
        os.kill(os.getpid(), signal.SIGUSR2)
        signal.sigtimedwait([], 0)
        assert restart.should_stop()
        with pytest.raises(StopRequested):
            restart.stop_now()
    assert not (config.marker_dir / "42").exists()


def test_handlers_are_restored_after_the_block(config: restart.RestartConfig):
    before = signal.getsignal(signal.SIGTERM)
    with restart.protocol(config):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    assert not restart.active()


def test_the_default_signal_is_usr2_from_profile_to_task() -> None:
    # NCCL may catch SIGUSR1; the profile, the task's spec and the task's own fallback agree.
    spec_default = {field.name: field.default for field in dataclasses.fields(JobSpec)}
    assert Profile().signal_name == spec_default["restart_signal"] == "USR2"
    env = {"BLOCKTRAIN_RUN_DIR": "/r", "BLOCKTRAIN_REQUEUE_DIR": "/m"}
    assert (task := restart.RestartConfig.from_environ(env)) is not None
    assert task.signal == "USR2"


def test_a_profile_chooses_another_signal(config: restart.RestartConfig) -> None:
    env = {"BLOCKTRAIN_RUN_DIR": "/r", "BLOCKTRAIN_REQUEUE_DIR": "/m"}
    chosen = restart.RestartConfig.from_environ({**env, "BLOCKTRAIN_RESTART_SIGNAL": "HUP"})
    assert chosen is not None
    assert chosen.signal == "HUP"
    # Near the time limit, the chosen signal is the time-limit warning.
    config = dataclasses.replace(config, signal="HUP", time_limit_s=60)
    config.run_dir.mkdir()
    with restart.protocol(config) as state:
        restart.should_stop()
        os.kill(os.getpid(), signal.SIGHUP)
        signal.sigtimedwait([], 0)
        assert restart.should_stop()
        assert state.cause() == "timeout"
        with pytest.raises(RequeueRequested, match="timeout"):
            restart.stop_now()
    assert restart.read_counts(config.run_dir) == {"timeout": 1}
