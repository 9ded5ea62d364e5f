"""A training's checkpoints and exports reach an MLflow artifact store in S3 (SeaweedFS).

A real tracking server keeps its artifacts in a bucket, either behind itself (clients upload
over HTTP, the server writes to S3) or directly (the training process writes to S3 with its
own credentials). tests/shapes_demo.py trains with checkpoints; the objects are then read from
the bucket itself, not through MLflow, and checked against their checksums.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_service import S3Server

from mlflow_service import MlflowServer

pytestmark = pytest.mark.integration
TIMEOUT_S = 300
DEMO = Path(__file__).resolve().parents[2] / "shapes_demo.py"


@pytest.fixture
def server(
    request: pytest.FixtureRequest, s3_server: S3Server, tmp_path: Path
) -> Iterator[tuple[MlflowServer, str]]:
    """An MLflow server whose artifacts live in their own bucket; yields it and the bucket."""
    mode: str = request.param
    bucket = f"mlflow-{mode}-{secrets.token_hex(4)}"  # the S3 server lasts the session
    s3_server.client().create_bucket(Bucket=bucket)
    env = s3_server.process_env(MLFLOW_S3_ENDPOINT_URL=s3_server.env["S3_ENDPOINT_URL"])
    mlflow = MlflowServer(tmp_path / "mlflow-server", env=env)
    mlflow.up("--artifacts", f"s3://{bucket}/runs", *(["--direct"] if mode == "direct" else []))
    yield mlflow, bucket
    mlflow.down(purge=True)


def train(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'trial'\n")
    done = subprocess.run(
        [sys.executable, DEMO, "train", "--steps", "16", "--examples", "128",
         "--batch-size", "32", "--checkpoint-every", "8"],
        cwd=project, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def training_env(
    mlflow: MlflowServer, s3_server: S3Server, project: Path, *, s3: bool
) -> dict[str, str]:
    """The training process's environment: with or without the S3 variables."""
    store = {**s3_server.env, "MLFLOW_S3_ENDPOINT_URL": s3_server.env["S3_ENDPOINT_URL"]}
    env = {
        **{k: v for k, v in os.environ.items() if k not in store and not k.startswith("AWS_")},
        **(store if s3 else {}),
        "MLFLOW_TRACKING_URI": mlflow.uri,
        "MLFLOW_EXPERIMENT_NAME": "s3",
        "BLOCKTRAIN_LOG_DIR": str(project / "logs"),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    return env


def run_objects(s3_server: S3Server, bucket: str, run_id: str) -> tuple[str, set[str]]:
    """The run's artifact prefix in the bucket, and the artifact names under it."""
    client = s3_server.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/")
    keys = {item["Key"] for page in pages for item in page.get("Contents", [])}
    prefixes = {key.split("/artifacts/")[0] for key in keys if f"/{run_id}/" in key}
    if not prefixes:
        return "", set()
    [prefix] = prefixes
    return prefix, {
        key.removeprefix(f"{prefix}/artifacts/") for key in keys if key.startswith(prefix)
    }


CHECKPOINTS = {
    "checkpoints/last/last.pt", "checkpoints/last/last.pt.sha256",
    "checkpoints/best/best.pt", "checkpoints/best/best.pt.sha256",
}  # fmt: skip


def check_checkpoints(s3_server: S3Server, bucket: str, prefix: str, folder: Path) -> None:
    """Each checkpoint in the bucket matches its checksum, and loads."""
    client = s3_server.client()
    for kind in ("last", "best"):
        key = f"{prefix}/artifacts/checkpoints/{kind}/{kind}.pt"
        for suffix in ("", ".sha256"):
            body = client.get_object(Bucket=bucket, Key=key + suffix)["Body"].read()
            (folder / f"{kind}.pt{suffix}").write_bytes(body)
        subprocess.run(["sha256sum", "--check", "--quiet", f"{kind}.pt.sha256"], cwd=folder,
                       check=True)  # fmt: skip
    from blocktrain.train.checkpoint import files as checkpoint

    assert checkpoint.load(folder / "last.pt")["progress"]["step"] == 16
    assert checkpoint.load(folder / "best.pt")["args"]["width"] == 16


@pytest.mark.parametrize("server", ["proxied", "direct"], indirect=True)
def test_checkpoints_and_exports_land_in_the_bucket(
    server: tuple[MlflowServer, str], s3_server: S3Server, tmp_path: Path
) -> None:
    mlflow, bucket = server
    project = tmp_path / "project"
    # Only in the direct mode does the training process know the store: behind the server,
    # everything it stores goes through the server.
    train(project, training_env(mlflow, s3_server, project, s3="direct" in bucket))
    [run_id] = [p.name for p in (project / ".blocktrain" / "runs").iterdir()]
    prefix, names = run_objects(s3_server, bucket, run_id)
    assert CHECKPOINTS | {"exports/model.pth", "exports/model.onnx", "model/MLmodel"} <= names
    check_checkpoints(s3_server, bucket, prefix, tmp_path)


@pytest.mark.parametrize("server", ["direct"], indirect=True)
def test_a_store_the_training_cannot_reach_holds_nothing_back_and_loses_nothing(
    server: tuple[MlflowServer, str], s3_server: S3Server, tmp_path: Path
) -> None:
    """Without S3 credentials every upload fails: the records still reach the run, the
    training says what failed, and the uploads kept for later go out once the store can be
    reached."""
    mlflow, bucket = server
    project = tmp_path / "project"
    env = training_env(mlflow, s3_server, project, s3=False)
    env["BLOCKTRAIN_MLFLOW_FLUSH_SECONDS"] = "3"  # how long the end waits for failing uploads
    done = train(project, env)
    [run_id] = [p.name for p in (project / ".blocktrain" / "runs").iterdir()]
    assert run_objects(s3_server, bucket, run_id) == ("", set())
    run = mlflow.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"train_loss", "val_accuracy"} <= set(run.data.metrics)
    assert done.stderr.count("could not upload") == 1, done.stderr
    assert "Unable to locate credentials" in done.stderr
    assert "MLFLOW_S3_ENDPOINT_URL" in done.stderr
    assert "records kept in" in done.stderr
    replayed = subprocess.run(
        [sys.executable, "-m", "blocktrain.track", "replay"],
        cwd=project, env=training_env(mlflow, s3_server, project, s3=True),
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    prefix, names = run_objects(s3_server, bucket, run_id)
    assert names >= CHECKPOINTS, sorted(names)
    check_checkpoints(s3_server, bucket, prefix, tmp_path)
