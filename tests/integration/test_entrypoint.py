"""entrypoint end to end: CLI, YAML args, MLflow server, Slack webhook, secrets kept out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from webhook_server import WebhookServer

from mlflow_service import MlflowServer

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
CANARY = "canary-7d41f09b3c"


@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


@pytest.fixture
def job_env(tmp_path: Path, mlflow_server: MlflowServer, hook: WebhookServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "BLOCKTRAIN_"))}
    env.update(
        MLFLOW_TRACKING_URI=mlflow_server.uri,
        MLFLOW_EXPERIMENT_NAME=f"entry-{tmp_path.name}",
        BLOCKTRAIN_LOG_DIR=str(tmp_path / "logs"),
        BLOCKTRAIN_SLACK_WEBHOOK_URL=hook.url,
        BLOCKTRAIN_CANARY_TOKEN=CANARY,
    )
    return env


def cli(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE / "entry_job.py"), *argv],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def runs(server: MlflowServer, experiment: str) -> list:
    client = server.client()
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_cli_with_yaml_runs_tracked_and_notified(
    job_env: dict[str, str], tmp_path: Path, mlflow_server: MlflowServer, hook: WebhookServer
):
    exp = tmp_path / "exp.yaml"
    exp.write_text("epochs: 3\noptim:\n  lr: 0.5\n")
    done = cli(job_env, tmp_path, "train", "--args", str(exp), "--note", "hi")
    assert done.returncode == 0, done.stderr
    [run] = runs(mlflow_server, job_env["MLFLOW_EXPERIMENT_NAME"])
    assert run.info.status == "FINISHED"
    assert run.data.params == {
        "epochs": "3", "optim.lr": "0.5", "optim.momentum": "0.9", "note": "hi", "fail": "False",
    }  # fmt: skip
    assert run.data.metrics["val_acc"] == 0.5
    texts = [b["text"] for b in hook.bodies]
    assert len(texts) == 2
    assert texts[0].startswith(":rocket: *train* started")
    assert texts[1].startswith(":white_check_mark: *train* finished")
    assert run.info.run_id in str(hook.bodies[1])  # the end message links the run


def test_bad_arguments_exit_2_and_create_nothing(
    job_env: dict[str, str], tmp_path: Path, mlflow_server: MlflowServer, hook: WebhookServer
):
    exp = tmp_path / "exp.yaml"
    exp.write_text("epochs: 3\noptim:\n  lr: fast\n")
    done = cli(job_env, tmp_path, "train", "--args", str(exp))
    assert done.returncode == 2
    assert done.stderr == f"error: {exp}:3: optim.lr: expected float, got str 'fast'\n"
    assert runs(mlflow_server, job_env["MLFLOW_EXPERIMENT_NAME"]) == []
    assert hook.received == []
    assert not (tmp_path / "logs").exists()


def test_canary_secret_appears_nowhere(
    job_env: dict[str, str], tmp_path: Path, mlflow_server: MlflowServer, hook: WebhookServer
):
    ok = cli(job_env, tmp_path, "train", "--note", f"token={CANARY}")
    failed = cli(job_env, tmp_path, "train", "--note", CANARY, "--fail")
    assert ok.returncode == 0, ok.stderr
    assert failed.returncode == 1
    client = mlflow_server.client()
    found = runs(mlflow_server, job_env["MLFLOW_EXPERIMENT_NAME"])
    assert sorted(r.info.status for r in found) == ["FAILED", "FINISHED"]
    seen: list[str] = []
    for run in found:
        seen += [
            *run.data.params.values(),
            *run.data.params,
            *run.data.tags.values(),
            *run.data.tags,
        ]
        local = Path(
            client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id))
        )
        files = [p for p in local.rglob("*") if p.is_file()]
        assert any(p.name == "rank-0.out" for p in files)
        seen += [p.read_text(errors="replace") for p in files]
    seen += [r.raw.decode() for r in hook.received]
    seen += [p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    seen += [ok.stdout, ok.stderr, failed.stdout, failed.stderr]
    assert len(hook.received) == 4
    leaks = [text[:200] for text in seen if CANARY in text]
    assert leaks == []
    # The places did receive the masked value, so the check above looked at the right text.
    assert any("token=***" in text for text in seen)
    assert any("failed with note=***" in text for text in seen)
