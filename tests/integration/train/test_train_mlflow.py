"""The engine's outputs in a real MLflow run (the embedded SQLite store in a throw-away
project): metrics, checkpoints, exported model files, the MLflow model with its signature,
plots; then evaluate and predict from that run's uploaded checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.integration
TIMEOUT_S = 300
DEMO = Path(__file__).resolve().parents[2] / "shapes_demo.py"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project with one demo training run in it; returns the paths and the run id."""
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text("[project]\nname = 'trial'\n")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SLURM_", "BLOCKTRAIN_", "MLFLOW_"))
        and name not in {"RANK", "LOCAL_RANK", "WORLD_SIZE"}
    }
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        MLFLOW_EXPERIMENT_NAME="engine",
        BLOCKTRAIN_LOG_DIR=str(root / "logs"),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
    )
    done = demo(
        root,
        env,
        "train",
        "--steps",
        "24",
        "--examples",
        "256",
        "--batch-size",
        "32",
        "--checkpoint-every",
        "10",
    )
    [run_id] = [p.name for p in (root / ".blocktrain" / "runs").iterdir()]
    return {"root": root, "env": env, "run_id": run_id, "train": done}


def demo(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, DEMO, *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def client(project: dict[str, Any]) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=project["env"]["MLFLOW_TRACKING_URI"])


def artifacts(project: dict[str, Any], path: str = "") -> dict[str, int]:
    found: dict[str, int] = {}
    for item in client(project).list_artifacts(project["run_id"], path):
        if item.is_dir:
            found.update(artifacts(project, item.path))
        else:
            found[item.path] = item.file_size
    return found


def test_training_lands_in_the_run(project: dict[str, Any]) -> None:
    run = client(project).get_run(project["run_id"])
    assert run.info.status == "FINISHED"
    assert {"train_loss", "lr", "val_accuracy", "val_loss"} <= set(run.data.metrics)
    history = client(project).get_metric_history(project["run_id"], "val_accuracy")
    # After each epoch (8 steps each). The entry function returns the last evaluation's value:
    # already the point at step 23, it is not logged a second time.
    assert [m.step for m in history] == [7, 15, 23]
    files = artifacts(project)
    expected = {
        "checkpoints/last/last.pt", "checkpoints/last/last.pt.sha256",
        "checkpoints/best/best.pt", "checkpoints/best/best.pt.sha256",
        "exports/model.pth", "exports/model.pt", "exports/model.onnx",
        "model/MLmodel", "plots/confusion_matrix.png", "plots/curves.png",
    }  # fmt: skip
    assert expected <= set(files), sorted(files)
    assert "step    0  loss" in project["train"].stdout
    assert "validation accuracy" in project["train"].stdout


def test_uploaded_checkpoints_match_their_checksums(
    project: dict[str, Any], tmp_path: Path
) -> None:
    from blocktrain.train.checkpoint import files as checkpoint

    for kind in ("last", "best"):
        local = Path(
            client(project).download_artifacts(
                project["run_id"], f"checkpoints/{kind}", str(tmp_path)
            )
        )
        subprocess.run(
            ["sha256sum", "--check", "--quiet", f"{kind}.pt.sha256"], cwd=local, check=True
        )
        state = checkpoint.load(local / f"{kind}.pt")
        assert state["args"]["width"] == 16
    assert checkpoint.load(tmp_path / "last" / "last.pt")["progress"]["step"] == 24


def test_mlflow_model_has_a_signature_and_predicts_like_the_weights(
    project: dict[str, Any],
) -> None:
    import mlflow.pytorch
    from mlflow.models import get_model_info

    from shapes_demo import network

    os.environ.setdefault("MLFLOW_TRACKING_URI", project["env"]["MLFLOW_TRACKING_URI"])
    uri = f"runs:/{project['run_id']}/model"
    signature = get_model_info(uri).signature
    assert tuple(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 1, 16, 16)
    assert tuple(signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 4)
    model = mlflow.pytorch.load_model(uri)  # pyright: ignore[reportPrivateImportUsage]
    weights = Path(client(project).download_artifacts(project["run_id"], "exports/model.pth"))
    reference = network(16).eval()
    reference.load_state_dict(torch.load(weights))
    batch = torch.randn(5, 1, 16, 16)
    torch.testing.assert_close(model(batch), reference(batch), rtol=1e-5, atol=1e-6)


def test_evaluate_and_predict_from_the_runs_artifacts(project: dict[str, Any]) -> None:
    root, run_id = project["root"], project["run_id"]
    # Without the local folder the checkpoints come from the run's artifacts.
    shutil.rmtree(root / ".blocktrain" / "runs" / run_id / "checkpoints")
    evaluated = demo(root, project["env"], "evaluate", "--run-id", run_id, "--test-examples", "200")
    assert "test accuracy" in evaluated.stdout
    assert "best.pt" in evaluated.stdout
    demo(
        root,
        project["env"],
        "predict",
        "--run-id",
        run_id,
        "--images",
        "12",
        "--output",
        "out.json",
    )
    rows = json.loads((root / "out.json").read_text())
    assert [r["index"] for r in rows] == list(range(12))
    assert {r["label"] for r in rows} <= {"hbar", "vbar", "square", "cross"}
    run = client(project).get_run(run_id)
    assert {"test_accuracy", "test_loss"} <= set(run.data.metrics)
    assert "predictions/out.json" in artifacts(project)
