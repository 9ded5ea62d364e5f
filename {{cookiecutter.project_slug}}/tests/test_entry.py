"""The entry functions end to end on a small dataset, and the files that drive them."""

import csv
import subprocess
import sys
from pathlib import Path

import yaml
from blocktrain.entry import resolve
from blocktrain.launch.sweeps.expand import argument_sets
from blocktrain.train import TrainConfig

from {{ cookiecutter.package_name }}.data import Data
from {{ cookiecutter.package_name }}.entry import evaluate, predict, train
from {{ cookiecutter.package_name }}.generate import generate

PROJECT = Path(__file__).resolve().parents[1]


def test_train_then_evaluate_and_predict_a_video(scratch: Path) -> None:
    """The training registers its model; the registered version evaluates as the run does."""
    generate(output="data/sky", images=160, clips=1, frames=8, size=32)
    values = train(
        data=Data(source="data/sky", size=32),
        schedule=TrainConfig(epochs=2, batch_size=16, monitor="val_accuracy", mode="max"),
        register_as="sky",
    )
    assert 0.0 <= values["val_accuracy"] <= 1.0
    [run] = [p.name for p in (scratch / ".blocktrain" / "runs").iterdir()]
    tested = evaluate(run_id=run)
    assert 0.0 <= tested["test_accuracy"] <= 1.0
    assert evaluate(model="models:/sky/1") == tested
    video = Path("data/sky/videos/clip-000.y4m")
    predict(model="models:/sky/latest", video=video, output=Path("labels.csv"))
    with (scratch / "labels.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["index"]) for row in rows] == list(range(8))
    assert {row["label"] for row in rows} <= {"aircraft", "bird", "drone", "sky"}
    assert all(0.25 <= float(row["score"]) <= 1.0 for row in rows)


def test_the_experiment_files_are_valid_arguments_of_train() -> None:
    experiments = PROJECT / "experiments"
    baseline = resolve(train, [experiments / "baseline.yaml"], {})
    schedule = baseline["schedule"]
    assert isinstance(schedule, dict)
    assert schedule["monitor"] == "val_accuracy"
    sets = argument_sets([], [], experiments / "ablation.yaml", {})
    assert len(sets) == 5
    for element in sets:
        resolve(train, list(element.files), element.overrides)


def test_the_command_line_and_mlproject_offer_the_same_entry_points() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}.entry", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    commands = {"generate", "train", "evaluate", "predict"}
    assert all(name in done.stdout for name in commands)
    mlproject = yaml.safe_load((PROJECT / "MLproject").read_text())
    assert set(mlproject["entry_points"]) == commands
    for name, point in mlproject["entry_points"].items():
        assert f"{{ cookiecutter.package_name }}.entry {name} " in point["command"]
