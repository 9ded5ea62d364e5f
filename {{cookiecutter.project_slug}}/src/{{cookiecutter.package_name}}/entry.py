"""The entry functions of {{ cookiecutter.project_name }}: generate, train, evaluate, predict.

    python -m {{ cookiecutter.package_name }}.entry generate --output data/sky
    python -m {{ cookiecutter.package_name }}.entry train --args experiments/baseline.yaml
    slurm-launch train --args experiments/baseline.yaml    # the same, as a Slurm job
    python -m {{ cookiecutter.package_name }}.entry evaluate --run-id RUN
    python -m {{ cookiecutter.package_name }}.entry predict --run RUN --video clip.y4m
    python -m {{ cookiecutter.package_name }}.entry evaluate --model models:/NAME/VERSION

``train``, ``evaluate`` and ``predict`` are wrapped by ``blocktrain.entrypoint``: every call
is an MLflow run (``evaluate`` adds its metrics to the training run; ``predict`` is a run of
its own, nested under the training run, so that any number of videos can be labelled) and
Slack hears of its start and end. With ``register_as: NAME`` a training registers its best
model as a new version of NAME in the MLflow model registry; ``evaluate`` and ``predict`` take
``--model models:/NAME/VERSION`` instead of a run (their run is then nested under the training
run). An experiment file holds their keyword arguments. torch is imported inside the
functions, so ``--help`` and slurm-launch's checks answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import blocktrain
from blocktrain.entry import main
from blocktrain.errors import BlocktrainError
from blocktrain.train import TrainConfig

from {{ cookiecutter.package_name }}.data import Data, Normalization, eval_transform, load
from {{ cookiecutter.package_name }}.generate import generate
from {{ cookiecutter.package_name }}.model import Model, Optim, build, optimizer

if TYPE_CHECKING:
    import torch
    from blocktrain.core.values import JSON

SCHEDULE = TrainConfig(
    epochs=12, batch_size=64, monitor="val_accuracy", mode="max", log_every_steps=10
)


@dataclass(frozen=True, slots=True)
class Trained:
    """What every checkpoint keeps for evaluate and predict: the dataset and network settings,
    the class names and the normalization of the training images."""

    data: Data
    model: Model
    classes: tuple[str, ...]
    normalization: Normalization


@blocktrain.entrypoint
def train(
    *,
    data: Data = Data(),
    model: Model = Model(),
    optim: Optim = Optim(),
    schedule: TrainConfig = SCHEDULE,
    checkpoint_every: int = 100,
    export: bool = True,
    register_as: str | None = None,
) -> dict[str, float]:
    """Train the network to tell drones, birds, aircraft and empty sky apart.

    Args:
        data: the dataset's source, image size, splits and augmentation
        model: the network's width and dropout
        optim: AdamW's learning rate and weight decay
        schedule: epochs, batch size (over all ranks), seed, precision, ... (TrainConfig)
        checkpoint_every: optimizer steps between checkpoints
        export: write the model as .pth, TorchScript, ONNX and an MLflow model, with plots
        register_as: register the best checkpoint's MLflow model as a new version of this
            registered model (needs export)
    """
    import torch
    from blocktrain import distributed
    from blocktrain.train import (
        CheckpointConfig,
        ExportConfig,
        Trainer,
        accuracy,
        default_folder,
        planned_steps,
        record_args,
    )
    from torch import nn

    if register_as is not None and not export:
        raise BlocktrainError("register_as registers the exported model: set export: true")
    with distributed.process_group() as place:
        splits = load(data)
        torch.manual_seed(schedule.seed)  # pyright: ignore[reportUnknownMemberType]
        network = build(model, len(splits.classes))
        steps = planned_steps(splits.train, schedule, place.world_size)
        adamw, cosine = optimizer(network, optim, steps)
        trainer = Trainer(
            network,
            adamw,
            nn.functional.cross_entropy,
            config=schedule,
            scheduler=cosine,
            metrics={"accuracy": accuracy},
            checkpoint=CheckpointConfig(folder=default_folder(), every_steps=checkpoint_every),
            export=ExportConfig(register_as=register_as) if export else None,
            class_names=splits.classes,
            args=record_args(Trained(data, model, splits.classes, splits.normalization)),
        )
        values = trainer.fit(splits.train, splits.val)
    print(f"validation accuracy {values['val_accuracy']:.3f}")
    return {"val_accuracy": values["val_accuracy"], "val_loss": values["val_loss"]}


@blocktrain.entrypoint
def evaluate(
    *,
    run_id: str | None = None,
    model: str | None = None,
    which: Literal["best", "last"] = "best",
) -> dict[str, float]:
    """Evaluate a trained run, or a registered model, on the test split of its data.

    With ``run_id`` the metrics are added to that run; with ``model`` they go to a run of
    their own, nested under the run the model was registered from.

    Args:
        run_id: the training run
        model: instead of run_id, a registered model version: models:/NAME/VERSION,
            models:/NAME/latest or models:/NAME@ALIAS
        which: the run's best checkpoint (highest validation accuracy) or its last one
    """
    from blocktrain import distributed
    from blocktrain.track import nest_under
    from blocktrain.train import accuracy, checkpoint_of, recorded_args
    from blocktrain.train import evaluate as evaluate_model
    from torch import nn

    with distributed.process_group():
        path, run = checkpoint_of(run_id=run_id, model=model, which=which)
        nest_under(run, model)  # with --model, this call's run under the training run
        trained = recorded_args(path, Trained)
        splits = load(trained.data, log_stats=False)
        values = evaluate_model(
            build(trained.model, len(trained.classes)),
            splits.test,
            checkpoint_path=path,
            loss_fn=nn.functional.cross_entropy,
            metrics={"accuracy": accuracy},
        )
    print(f"test accuracy {values['test_accuracy']:.3f} ({model or path.name} of run {run})")
    return values


@blocktrain.entrypoint
def predict(
    *,
    run: str | None = None,
    model: str | None = None,
    video: Path,
    output: Path | None = None,
    which: Literal["best", "last"] = "best",
) -> None:
    """Label every frame of a video with a trained run; write the labels and scores.

    The file has one row per frame: its ``index``, the ``label``, its ``score`` (the
    probability) and the probability of each class. It is also logged to this call's MLflow
    run, which the MLflow UI shows nested under the training run.

    Args:
        run: the training run whose checkpoint labels the frames
        model: instead of run, a registered model version: models:/NAME/VERSION,
            models:/NAME/latest or models:/NAME@ALIAS
        video: a YUV4MPEG2 (.y4m) video; ffmpeg converts others
        output: the .csv or .json file (default: predictions/VIDEO.csv)
        which: the run's best checkpoint or its last one
    """
    import torch
    from blocktrain.track import nest_under
    from blocktrain.train import checkpoint_of, recorded_args
    from blocktrain.train import predict as predict_rows
    from torch.utils.data import TensorDataset

    from {{ cookiecutter.package_name }}.video import read_y4m

    path, run = checkpoint_of(run_id=run, model=model, which=which)
    trained = recorded_args(path, Trained)
    clip = read_y4m(video)
    frames = torch.as_tensor(clip.frames).permute(0, 3, 1, 2)
    inputs = eval_transform(trained.data.size, trained.normalization)(frames)
    target = output or Path("predictions") / f"{video.stem}.csv"
    nest_under(run, model)

    def rows(outputs: torch.Tensor) -> list[dict[str, JSON]]:
        return frame_rows(outputs, trained.classes)

    network = build(trained.model, len(trained.classes))
    predict_rows(network, TensorDataset(inputs), target, checkpoint_path=path, rows=rows)
    print(
        f"labelled {len(frames)} frames of {video} in {target} ({model or path.name} of run {run})"
    )


def frame_rows(outputs: torch.Tensor, classes: tuple[str, ...]) -> list[dict[str, JSON]]:
    """One row per frame: the most likely class, its probability, every class's probability."""
    probabilities = cast("list[list[float]]", outputs.softmax(dim=1).tolist())  # pyright: ignore[reportUnknownMemberType]
    rows: list[dict[str, JSON]] = []
    for values in probabilities:
        best = max(range(len(classes)), key=values.__getitem__)
        row: dict[str, JSON] = {"label": classes[best], "score": round(values[best], 4)}
        row.update({f"p_{name}": round(p, 4) for name, p in zip(classes, values, strict=True)})
        rows.append(row)
    return rows


if __name__ == "__main__":
    main(generate, train, evaluate, predict)
