"""Each metric point of a run once, against a real MLflow server: attempts SIGKILLed between two
checkpoints, each next attempt resuming from the newest checkpoint (with the server up, and
with the server away when it starts), and spill files replayed over what the run holds already
(on the server and on the embedded SQLite store).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from blocktrain.track.backend import MlflowBackend
from blocktrain.track.replay import send_spill, spill_path
from blocktrain.track.writer import Op, write_spill
from mlflow_service import MlflowServer

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
STEPS = 12  # tracked_jobs.resumable's default: a checkpoint every 4 steps


def job_env(uri: str, tmp_path: Path, **more: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": f"resume-{tmp_path.name}",
        "BLOCKTRAIN_LOG_DIR": str(tmp_path / "logs"),
        "BLOCKTRAIN_SYSTEM_METRICS_INTERVAL_S": "0",
        **more,
    }
    for name in (
        "BLOCKTRAIN_RUN_ID",
        "RANK",
        "SLURM_PROCID",
        "SLURM_JOB_ID",
        "SLURM_RESTART_COUNT",
    ):
        if name not in more:
            env.pop(name, None)
    return env


def attempt(tmp_path: Path, env: dict[str, str], kill_at: int | None = None) -> int:
    """Run one attempt of ``tracked_jobs.resumable`` in ``tmp_path``; its exit status."""
    if kill_at is not None:
        env = {**env, "KILL_AT_STEP": str(kill_at)}
    done = subprocess.run(
        [sys.executable, str(HERE / "tracked_jobs.py"), "resumable"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def the_run(client: Any, tmp_path: Path) -> str:
    experiment = client.get_experiment_by_name(f"resume-{tmp_path.name}")
    (run,) = client.search_runs([experiment.experiment_id])
    return run.info.run_id


def steps_of(client: Any, run_id: str, key: str) -> list[int]:
    return sorted(int(m.step) for m in client.get_metric_history(run_id, key))


def assert_each_step_once(client: Any, run_id: str) -> None:
    history = client.get_metric_history(run_id, "loss")
    assert sorted(int(m.step) for m in history) == list(range(STEPS))
    assert all(m.value == 1.0 / (m.step + 1) for m in history)
    for key in ("attempt", "final_loss"):
        logged = steps_of(client, run_id, key)
        assert len(logged) == len(set(logged)), (key, logged)


def test_attempts_killed_between_checkpoints_leave_each_step_once(
    mlflow_server: MlflowServer, tmp_path: Path
):
    env = job_env(mlflow_server.uri, tmp_path)
    assert attempt(tmp_path, env, kill_at=6) == -signal.SIGKILL  # steps 0..6, checkpoint at 4
    client = mlflow_server.client()
    run_id = the_run(client, tmp_path)
    assert steps_of(client, run_id, "loss") == list(range(7))
    env["BLOCKTRAIN_RUN_ID"] = run_id
    assert attempt(tmp_path, env, kill_at=9) == -signal.SIGKILL  # 4..9, checkpoint at 8
    assert attempt(tmp_path, env) == 0  # 8..11
    assert_each_step_once(client, run_id)
    assert steps_of(client, run_id, "attempt") == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_an_attempt_resumed_while_the_server_is_away_leaves_each_step_once(
    own_mlflow_server: MlflowServer, tmp_path: Path
):
    own_mlflow_server.up()
    env = job_env(own_mlflow_server.uri, tmp_path)
    assert attempt(tmp_path, env, kill_at=6) == -signal.SIGKILL
    run_id = the_run(own_mlflow_server.client(), tmp_path)
    own_mlflow_server.down()
    env |= {
        "BLOCKTRAIN_RUN_ID": run_id,
        "BLOCKTRAIN_MLFLOW_START_SECONDS": "1",
        "BLOCKTRAIN_MLFLOW_FLUSH_SECONDS": "120",
    }
    job = subprocess.Popen(
        [sys.executable, str(HERE / "tracked_jobs.py"), "resumable"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert job.stderr is not None
    started = time.monotonic()
    # Up again only once the attempt has started without it, so that it cannot know then
    # which steps the run holds.
    for line in job.stderr:
        if "tracking attempt" in line or time.monotonic() - started > 120:
            break
    own_mlflow_server.up()
    _, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    client = own_mlflow_server.client()
    assert_each_step_once(client, run_id)
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("store", ["server", "sqlite"])
def test_a_spill_file_replayed_over_what_the_run_holds_adds_each_step_once(
    store: str, mlflow_server: MlflowServer, tmp_path: Path
):
    if store == "server":
        backend = MlflowBackend(mlflow_server.uri)
    else:
        backend = MlflowBackend(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")
    run_id = backend.create_run(f"replay-{tmp_path.name}", None, {})
    now = int(time.time() * 1000)
    # The run holds steps 0..5; the file, steps 3..8: sent while the attempt had given up on
    # them, or by a replay that lost the server half-way.
    backend.log_batch(run_id, [("loss", 1.0 / (s + 1), now, s) for s in range(6)], {}, {})
    ops = [Op("metrics", {"items": [["loss", 1.0 / (s + 1), now + s, s]]}) for s in range(3, 9)]
    spill = spill_path(tmp_path / "logs", run_id, 1)
    write_spill(spill, run_id, [*ops, Op("params", {"items": {"lr": "0.1"}})])
    assert send_spill(backend, spill) == 4
    history = backend.client.get_metric_history(run_id, "loss")
    assert sorted(int(m.step) for m in history) == list(range(9))
    assert backend.get_run(run_id).data.params == {"lr": "0.1"}
    assert not spill.exists()
