"""Node failures in the restart accounting: an attempt that Slurm requeued without the job
asking (NODE_FAIL) is counted as ``node_failure`` by the next attempt's rank 0, once."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest

from blocktrain import restart
from blocktrain.core.paths import RunFiles
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


def attempt(config: restart.RestartConfig, restart_count: int) -> restart.RestartConfig:
    return dataclasses.replace(config, restart_count=restart_count)


def preempted(config: restart.RestartConfig) -> None:
    """One attempt that is preempted at its first step boundary and asks for a requeue."""
    with restart.protocol(config):
        restart.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # the handler runs before this returns
        assert restart.should_stop()
        with pytest.raises(RequeueRequested, match="preemption"):
            restart.stop_now()


def lost(config: restart.RestartConfig) -> None:
    """One attempt whose node dies: nothing of the job runs to ask for anything."""
    with restart.protocol(config):
        restart.should_stop()


@pytest.mark.parametrize(
    ("restart_count", "asked", "expected"),
    [
        (0, {}, []),
        (1, {}, [0]),
        (3, {"0": "preemption", "2": "timeout"}, [1]),
        (2, {"0": "crash", "1": "node_failure"}, []),
    ],
)
def test_unrequested_attempts(restart_count: int, asked: dict[str, str], expected: list[int]):
    assert restart.unrequested(restart_count, asked) == expected


def test_a_requeue_slurm_made_unasked_counts_as_a_node_failure_once(
    config: restart.RestartConfig, capsys: pytest.CaptureFixture[str]
):
    preempted(attempt(config, 0))
    lost(attempt(config, 1))  # its node failed; Slurm requeued the job
    preempted(attempt(config, 2))
    assert restart.read_counts(config.run_dir) == {"preemption": 2, "node_failure": 1}
    assert "Slurm requeued job 42 (restart 1) without its asking" in capsys.readouterr().err
    lost(attempt(config, 3))  # a later attempt counts the same loss no second time
    assert restart.read_counts(config.run_dir) == {"preemption": 2, "node_failure": 1}
    requests = json.loads(RunFiles(config.run_dir).requeue_requests.read_text())
    assert requests == {"42": {"0": "preemption", "1": "node_failure", "2": "preemption"}}


def test_only_rank_zero_counts(config: restart.RestartConfig, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    lost(attempt(config, 1))
    assert restart.read_counts(config.run_dir) == {}


def test_another_job_of_the_run_starts_its_own_count(config: restart.RestartConfig):
    preempted(attempt(config, 0))
    relaunched = dataclasses.replace(config, job_key="77")
    lost(attempt(relaunched, 0))
    assert restart.read_counts(config.run_dir) == {"preemption": 1}
    lost(attempt(relaunched, 1))
    assert restart.read_counts(config.run_dir) == {"preemption": 1, "node_failure": 1}


@pytest.mark.parametrize("text", ["", "[]", '{"42": []}', "{"])
def test_a_torn_or_foreign_record_reads_as_no_request(config: restart.RestartConfig, text: str):
    RunFiles(config.run_dir).requeue_requests.write_text(text)
    assert restart.read_requests(config.run_dir) == {}
