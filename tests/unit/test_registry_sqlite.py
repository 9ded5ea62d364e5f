"""Registered models in the embedded SQLite store: a training registers its best checkpoint's
MLflow model with its metrics, ``models:/`` URIs load it back as the checkpoint held it, a
missing name, version or alias is one line naming what there is, and a registry failure only
warns."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from trainkit import TinyNet, blobs

from blocktrain.core.jobenv import JobContext
from blocktrain.errors import BlocktrainError
from blocktrain.track import TrackConfig, Tracker
from blocktrain.track.backend import MlflowBackend
from blocktrain.track.registry import ModelRef, describe, parse_model_uri
from blocktrain.track.tracker import made_current
from blocktrain.track.writer import RunWriter
from blocktrain.train import (
    CheckpointConfig,
    ExportConfig,
    TrainConfig,
    TrainConfigError,
    Trainer,
    accuracy,
    checkpoint_of,
    evaluate,
    find_checkpoint,
    recorded_args,
    registered_checkpoint,
)
from blocktrain.train.checkpoint import files as checkpoint
from blocktrain.train.outputs import register_model

NAME = "tiny-blobs"


@dataclass(frozen=True)
class Project:
    root: Path
    uri: str
    run_id: str
    checkpoints: Path


def tracker_for(root: Path, uri: str, run_id: str, backend: MlflowBackend) -> Tracker:
    """The handle a tracked call would make, without capturing this process's output."""
    config = TrackConfig(tracking_uri=uri, experiment="registry", root=root, log_dir=root / "logs")
    writer = RunWriter(backend, run_id=run_id, warn=logging.getLogger("test").warning)
    return Tracker(
        context=JobContext(host="here", run_id=run_id),
        config=config,
        attempt=1,
        attempt_dir=root / "logs" / "attempt-1",
        writer=writer,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project whose one run trained TinyNet and registered it as NAME."""
    root = tmp_path_factory.mktemp("registry-project")
    (root / "pyproject.toml").write_text("[project]\nname = 'registry'\n")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    backend = MlflowBackend(uri, artifact_root=root / "mlartifacts")
    commit = {"mlflow.source.git.commit": "0123abc"}
    run_id = backend.create_run("registry", "train-tiny", commit)
    tracker = tracker_for(root, uri, run_id, backend)
    folder = root / ".blocktrain" / "runs" / run_id / "checkpoints"
    model = TinyNet()
    with made_current(tracker):
        trainer = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.05),
            nn.functional.cross_entropy,
            config=TrainConfig(epochs=3, batch_size=16, monitor="val_accuracy", mode="max"),
            metrics={"accuracy": accuracy},
            checkpoint=CheckpointConfig(folder=folder, every_steps=1000),
            export=ExportConfig(formats=("mlflow",), plots=False, register_as=NAME),
            args={"classes": 3, "dropout": 0.2},
        )
        trainer.fit(blobs(96), blobs(48, seed=1))
    assert tracker.writer is not None
    tracker.writer.close(30.0, None)
    return Project(root, uri, run_id, folder)


@pytest.fixture
def inside(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """Working in the project, its store the tracking URI."""
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.uri)
    return project


def client(project: Project) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=project.uri, registry_uri=project.uri)


def test_the_training_registers_its_best_model_with_the_runs_metrics(project: Project) -> None:
    version = client(project).get_model_version(NAME, "1")
    assert version.run_id == project.run_id
    assert version.source == f"runs:/{project.run_id}/model"
    assert version.tags == {"run_id": project.run_id, "run_name": "train-tiny",
                            "git_commit": "0123abc"}  # fmt: skip
    best = checkpoint.best(project.checkpoints)
    assert best is not None
    assert f"The best checkpoint's weights ({best.name}, val_accuracy " in version.description
    for metric in ("val_accuracy", "val_loss", "train_loss"):
        assert f"| {metric} | " in version.description
    assert "attempt" not in version.description


def test_a_models_uri_loads_the_best_checkpoints_weights_and_arguments(inside: Project) -> None:
    kept = registered_checkpoint(f"models:/{NAME}/1")
    assert (kept.run_id, kept.version.version) == (inside.run_id, "1")
    best = checkpoint.best(inside.checkpoints)
    assert best is not None
    registered, trained = checkpoint.load(kept.path), checkpoint.load(best)
    assert registered["args"] == {"classes": 3, "dropout": 0.2}
    assert registered["model"].keys() == trained["model"].keys()
    for name, tensor in trained["model"].items():
        assert torch.equal(registered["model"][name], tensor), name
    # Kept once: the next call reads the same file.
    assert registered_checkpoint(f"models:/{NAME}/latest").path == kept.path


@dataclass(frozen=True)
class Kept:
    """What the training kept in its checkpoints (``args``), as an entry function reads it."""

    classes: int
    dropout: float


def test_a_models_uri_names_its_checkpoint_and_training_run(inside: Project) -> None:
    found = checkpoint_of(model=f"models:/{NAME}/1")
    assert found == (registered_checkpoint(f"models:/{NAME}/1").path, inside.run_id)
    assert recorded_args(found.path, Kept) == Kept(classes=3, dropout=0.2)


def test_evaluate_gives_the_same_metrics_from_the_uri_as_from_the_checkpoint(
    inside: Project,
) -> None:
    data = blobs(40, seed=7)
    best = find_checkpoint(folder=inside.checkpoints)
    by_path = evaluate(TinyNet(), data, checkpoint_path=best, loss_fn=nn.functional.cross_entropy)
    by_uri = evaluate(
        TinyNet(), data, checkpoint_path=f"models:/{NAME}/1", loss_fn=nn.functional.cross_entropy
    )
    assert by_uri == by_path
    assert find_checkpoint(model_uri=f"models:/{NAME}/1").name == "step-000000000.pt"


def test_an_alias_names_a_version(inside: Project) -> None:
    client(inside).set_registered_model_alias(NAME, "champion", "1")
    assert registered_checkpoint(f"models:/{NAME}@champion").version.version == "1"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"models:/{NAME}/7", f"registered model '{NAME}' has no version 7 "),
        (f"models:/{NAME}@prod", f"registered model '{NAME}' has no alias 'prod' "),
        ("models:/no-such-model/1", "no registered model 'no-such-model' "),
    ],
)
def test_what_the_registry_lacks_is_one_line_naming_what_it_has(
    inside: Project, uri: str, expected: str
) -> None:
    with pytest.raises(BlocktrainError) as raised:
        registered_checkpoint(uri)
    message = str(raised.value)
    assert message.startswith(expected)
    assert "\n" not in message
    assert f"in the MLflow model registry at {inside.uri}" in message
    assert "(versions: 1)" in message or "champion" in message or NAME in message


def test_a_registry_failure_warns_in_one_line_and_returns_nothing(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    backend = MlflowBackend(project.uri)
    missing_run = "f" * 32
    tracker = tracker_for(project.root, project.uri, missing_run, backend)
    config = ExportConfig(formats=("mlflow",), register_as=NAME)
    with caplog.at_level(logging.WARNING, logger="blocktrain.train"):
        assert register_model(config, tracker, "The weights at the end of training") is None
        assert register_model(config, None, "The weights at the end of training") is None
    assert tracker.writer is not None
    tracker.writer.close(5.0, None)
    lines = [r.getMessage() for r in caplog.records if r.name == "blocktrain.train"]
    assert len(lines) == 2
    assert lines[0].startswith(f"model not registered as '{NAME}': ")
    assert f"mlflow.register_model('runs:/{missing_run}/model', '{NAME}')" in lines[0]
    assert "not a tracked run" in lines[1]
    assert all("\n" not in line for line in lines)
    assert [str(v.version) for v in client(project).search_model_versions(f"name='{NAME}'")] == [
        "1"
    ]


def test_model_uris_parse_into_name_and_version_or_alias() -> None:
    assert parse_model_uri("models:/sky/3") == ModelRef("sky", "3")
    assert parse_model_uri("models:/sky/latest") == ModelRef("sky")
    assert parse_model_uri("models:/sky.v2@champion") == ModelRef("sky.v2", alias="champion")
    assert str(ModelRef("sky")) == "models:/sky/latest"
    for wrong in ("models:/sky", "models:/sky/three", "models:/", "runs:/abc/model", "sky/3"):
        with pytest.raises(BlocktrainError, match="not a registered model URI; write models:/"):
            parse_model_uri(wrong)


def test_registering_needs_the_mlflow_format_and_a_usable_name() -> None:
    with pytest.raises(TrainConfigError, match="add 'mlflow' to formats"):
        ExportConfig(formats=("onnx",), register_as="sky")
    with pytest.raises(TrainConfigError, match="cannot name a registered model"):
        ExportConfig(register_as="sky/v2")


def test_a_description_is_a_markdown_table_of_the_metrics() -> None:
    text = describe({"val_loss": 0.25, "val_accuracy": 0.9375}, run_name="train-a",
                    run_id="r1", weights="The weights at the end of training")  # fmt: skip
    assert text.splitlines() == [
        "The weights at the end of training of run **train-a** (`r1`).",
        "",
        "| metric | value |",
        "|---|---|",
        "| val_accuracy | 0.9375 |",
        "| val_loss | 0.25 |",
    ]
