"""A small, complete entry module that the tests and benchmarks run as a real job.

It trains a little CNN to tell four synthetic shapes apart (horizontal bar, vertical bar,
square, cross) in noisy 16x16 images, so that it needs no download, with the training engine
(:mod:`blocktrain.train`): checkpoints, exact resume, DDP when launched on several tasks,
exports and plots at the end. Run it as
``python tests/shapes_demo.py train --args tests/shapes_demo.yaml``, then
``python tests/shapes_demo.py evaluate --run-id RUN`` or ``predict --run-id RUN``; a project
that names ``shapes_demo`` as its entry module launches it with slurm-launch. The example for
users is the project template (``make project``), not this module.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import blocktrain
from blocktrain.entry import main

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from blocktrain.core.values import JSON

CLASSES = ("hbar", "vbar", "square", "cross")
VALIDATION_EXAMPLES = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class Optim:
    """SGD settings."""

    lr: float = 0.05
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@blocktrain.entrypoint
def train(
    *,
    steps: int = 300,
    batch_size: int = 64,
    width: int = 16,
    noise: float = 0.3,
    optim: Optim = Optim(),
    seed: int = 0,
    examples: int = 4096,
    checkpoint_every: int = 100,
    export: bool = True,
) -> dict[str, float]:
    """Train a small CNN on synthetic shapes and report validation accuracy.

    Args:
        steps: optimizer steps
        batch_size: images per step (over all tasks)
        width: channels of the first convolution
        noise: standard deviation of the pixel noise
        optim: optimizer settings
        seed: seed for data and weights
        examples: training images (the epochs follow from steps)
        checkpoint_every: steps between checkpoints
        export: write the model as .pth, TorchScript, ONNX and an MLflow model, plus plots
    """
    import torch
    from torch import nn

    from blocktrain import distributed
    from blocktrain.train import (
        CheckpointConfig,
        ExportConfig,
        TrainConfig,
        Trainer,
        accuracy,
        default_folder,
    )

    arguments = {"steps": steps, "batch_size": batch_size, "width": width, "noise": noise}
    with distributed.process_group():
        torch.manual_seed(seed)  # pyright: ignore[reportUnknownMemberType]
        model = network(width)
        config = TrainConfig(
            epochs=-(-steps // max(1, examples // batch_size)),
            max_steps=steps,
            batch_size=batch_size,
            seed=seed,
            monitor="val_accuracy",
            mode="max",
            log_every_steps=20,
        )
        trainer = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum),
            nn.functional.cross_entropy,
            config=config,
            metrics={"accuracy": accuracy},
            checkpoint=CheckpointConfig(folder=default_folder(), every_steps=checkpoint_every),
            export=ExportConfig() if export else None,
            class_names=CLASSES,
            args={**arguments, "optim": dataclasses.asdict(optim), "seed": seed},
        )
        values = trainer.fit(
            dataset(examples, noise, seed), dataset(VALIDATION_EXAMPLES, noise, seed + 1)
        )
    print(f"validation accuracy {values['val_accuracy']:.3f}")
    return {"val_accuracy": values["val_accuracy"]}


@blocktrain.entrypoint
def evaluate(
    *, run_id: str, which: Literal["best", "last"] = "best", test_examples: int = 1000
) -> dict[str, float]:
    """Evaluate a trained run on new synthetic shapes; the metrics go to the same run.

    Args:
        run_id: the training run
        which: its best or its last checkpoint
        test_examples: images to evaluate on
    """
    from torch import nn

    from blocktrain.train import accuracy
    from blocktrain.train import evaluate as evaluate_model

    model, args, path = trained(run_id, which)
    data = dataset(test_examples, cast("float", args["noise"]), _TEST_SEED)
    values = evaluate_model(
        model,
        data,
        checkpoint_path=path,
        loss_fn=nn.functional.cross_entropy,
        metrics={"accuracy": accuracy},
    )
    print(f"test accuracy {values['test_accuracy']:.3f} ({path.name})")
    return values


@blocktrain.entrypoint
def predict(
    *,
    run_id: str,
    which: Literal["best", "last"] = "best",
    images: int = 100,
    output: Path = Path("predictions.csv"),
) -> None:
    """Classify new synthetic shapes with a trained run; write them to a CSV or JSON file.

    Args:
        run_id: the training run
        which: its best or its last checkpoint
        images: how many images to classify
        output: the file (.csv or .json); it is also logged to the run
    """
    from blocktrain.train import predict as predict_batches

    model, args, path = trained(run_id, which)
    data = dataset(images, cast("float", args["noise"]), _TEST_SEED)

    def rows(outputs: torch.Tensor) -> list[dict[str, JSON]]:
        scores, labels = outputs.softmax(dim=1).max(dim=1)
        # tolist() is untyped in torch's stubs.
        label_list = cast("list[int]", labels.tolist())  # pyright: ignore[reportUnknownMemberType]
        score_list = cast("list[float]", scores.tolist())  # pyright: ignore[reportUnknownMemberType]
        pairs = zip(label_list, score_list, strict=True)
        return [{"label": CLASSES[i], "score": round(s, 4)} for i, s in pairs]

    predict_batches(model, data, output, checkpoint_path=path, rows=rows)
    print(f"wrote {images} predictions to {output} ({path.name})")


_TEST_SEED = 1_000_000


def trained(
    run_id: str, which: Literal["best", "last"]
) -> tuple[nn.Module, dict[str, object], Path]:
    """The run's network (built from the arguments its checkpoint recorded), those arguments,
    and the checkpoint."""
    from blocktrain.train import find_checkpoint
    from blocktrain.train.checkpoint import files as checkpoint

    path = find_checkpoint(run_id=run_id, which=which)
    args = cast("dict[str, object]", checkpoint.load(path)["args"])
    return network(cast("int", args["width"])), args, path


def network(width: int) -> nn.Module:
    """The CNN: two convolutions, global average pooling, a linear classifier."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * width, len(CLASSES)),
    )  # fmt: skip


def dataset(count: int, noise: float, seed: int) -> TensorDataset:
    """``count`` labelled images drawn from a generator seeded with ``seed``."""
    import torch
    from torch.utils.data import TensorDataset

    return TensorDataset(*shapes(count, noise, torch.Generator().manual_seed(seed)))


def shapes(
    count: int, noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` noisy 16x16 images of random shapes at random places, and their labels."""
    import torch

    labels = torch.randint(0, len(CLASSES), (count,), generator=generator)
    images = torch.zeros(count, 1, 16, 16)
    # tolist() is untyped in torch's stubs; these are plain ints.
    corners = cast("list[list[int]]", torch.randint(2, 9, (count, 2), generator=generator).tolist())  # pyright: ignore[reportUnknownMemberType]
    names = cast("list[int]", labels.tolist())  # pyright: ignore[reportUnknownMemberType]
    for i, (label, (y, x)) in enumerate(zip(names, corners, strict=True)):
        if label == 0:
            images[i, 0, y + 2, x : x + 6] = 1
        elif label == 1:
            images[i, 0, y : y + 6, x + 2] = 1
        elif label == 2:
            images[i, 0, y : y + 5, x : x + 5] = 1
        else:
            images[i, 0, y + 2, x : x + 5] = 1
            images[i, 0, y : y + 5, x + 2] = 1
    images += noise * torch.randn(images.shape, generator=generator)
    return images, labels


if __name__ == "__main__":
    main(train, evaluate, predict)
