"""evaluate and predict from a checkpoint folder; finding a run's best or last checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from trainkit import TinyNet, blobs, digest

from blocktrain.errors import BlocktrainError
from blocktrain.train import (
    TrainConfig,
    Trainer,
    accuracy,
    evaluate,
    find_checkpoint,
    load_weights,
    predict,
)
from blocktrain.train.checkpoint import files as checkpoint
from blocktrain.train.checkpoint.files import CheckpointConfig

DATA = blobs(21, seed=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trainer]:
    folder = tmp_path_factory.mktemp("run") / "checkpoints"
    model = TinyNet()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.functional.cross_entropy,
        config=TrainConfig(epochs=4, batch_size=8, monitor="val_accuracy", mode="max"),
        metrics={"accuracy": accuracy},
        checkpoint=CheckpointConfig(folder=folder, every_steps=3),
    )
    trainer.fit(blobs(40, seed=1), blobs(40, seed=2))
    return folder, trainer


def test_find_best_and_last(trained: tuple[Path, Trainer]) -> None:
    folder, trainer = trained
    best, last = find_checkpoint(folder=folder), find_checkpoint(folder=folder, which="last")
    assert last == checkpoint.newest_good(folder) == checkpoint.checkpoint_path(folder, 20)
    assert best == checkpoint.best(folder)
    assert checkpoint.load(best)["progress"]["step"] == trainer.progress.best_step


def test_find_without_a_best_falls_back_to_the_newest(tmp_path: Path) -> None:
    checkpoint.save({"model": {}}, tmp_path, 4)
    assert find_checkpoint(folder=tmp_path) == checkpoint.checkpoint_path(tmp_path, 4)
    with pytest.raises(BlocktrainError, match=r"no good checkpoint for .*empty.*train it first"):
        find_checkpoint(folder=tmp_path / "empty")


def test_load_weights_from_a_file_or_folder(trained: tuple[Path, Trainer]) -> None:
    folder, trainer = trained
    model = TinyNet(seed=9)
    assert load_weights(model, folder, which="last") == checkpoint.checkpoint_path(folder, 20)
    assert digest(model) == digest(trainer.model)


def test_evaluate_reports_split_metrics(trained: tuple[Path, Trainer]) -> None:
    folder, trainer = trained
    values = evaluate(
        TinyNet(seed=9),
        DATA,
        checkpoint_path=folder,
        which="last",
        loss_fn=nn.functional.cross_entropy,
        metrics={"accuracy": accuracy},
        batch_size=4,
    )
    assert list(values) == ["test_accuracy", "test_loss"]
    trainer.model.eval()
    with torch.no_grad():
        images, labels = DATA.tensors
        outputs = trainer.model(images)
    assert values["test_accuracy"] == pytest.approx(float(accuracy(outputs, labels).mean()))
    assert values["test_loss"] == pytest.approx(float(nn.functional.cross_entropy(outputs, labels)))


def test_predict_writes_csv_in_dataset_order(trained: tuple[Path, Trainer], tmp_path: Path) -> None:
    folder, _ = trained
    output = predict(
        TinyNet(), DATA, tmp_path / "out" / "p.csv", checkpoint_path=folder, batch_size=8
    )
    rows = list(csv.DictReader(output.open()))
    assert [int(r["index"]) for r in rows] == list(range(21))
    assert set(rows[0]) == {"index", "prediction", "score"}
    assert all(0 <= float(r["score"]) <= 1 and r["prediction"] in "012" for r in rows)


def test_predict_json_with_own_rows(tmp_path: Path) -> None:
    def rows(outputs: torch.Tensor) -> list[dict[str, object]]:
        return [
            {"top": int(o.argmax()), "logits": [round(v, 3) for v in o.tolist()]} for o in outputs
        ]

    output = predict(TinyNet(), DATA, tmp_path / "p.json", rows=rows)  # pyright: ignore[reportArgumentType]
    data = json.loads(output.read_text())
    assert len(data) == 21
    assert data[3]["index"] == 3
    assert len(data[3]["logits"]) == 3


def test_predict_refuses_other_formats(tmp_path: Path) -> None:
    with pytest.raises(BlocktrainError, match=r"\.csv or \.json file, not 'p.txt'"):
        predict(TinyNet(), DATA, tmp_path / "p.txt")
