"""The entry module of the dashboard tests' throwaway project.

``train`` fits a small classifier of noisy blobs (brightness tells the class) with the
training engine: checkpoints, the best one by validation accuracy, its MLflow model exported
and, with ``register_as``, registered. ``evaluate`` scores the best checkpoint of a run, or a
registered model version, on held-out blobs and prints the metrics as one ``RESULT`` line.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import blocktrain
from blocktrain.entry import main

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import TensorDataset

CLASSES = ("dark", "grey", "bright")


@blocktrain.entrypoint
def train(
    *, lr: float = 0.05, steps: int = 24, width: int = 4, register_as: str | None = None
) -> dict[str, float]:
    """Train the blob classifier; register its best checkpoint's model as ``register_as``.

    Args:
        lr: SGD's learning rate
        steps: optimizer steps (8 per epoch)
        width: channels of the convolution
        register_as: the registered model that gets a new version at the end
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

    torch.set_num_threads(1)
    with distributed.process_group():
        model = network(width)
        trainer = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
            nn.functional.cross_entropy,
            config=TrainConfig(
                epochs=-(-steps // 8),
                max_steps=steps,
                batch_size=16,
                monitor="val_accuracy",
                mode="max",
                log_every_steps=2,
            ),
            metrics={"accuracy": accuracy},
            checkpoint=CheckpointConfig(folder=default_folder(), every_steps=8),
            export=ExportConfig(formats=("mlflow",), register_as=register_as),
            class_names=CLASSES,
            args={"width": width},
        )
        values = trainer.fit(blobs(128, seed=0), blobs(64, seed=1))
    return {"val_accuracy": values["val_accuracy"], "val_loss": values["val_loss"]}


@blocktrain.entrypoint
def evaluate(*, run_id: str | None = None, model: str | None = None) -> dict[str, float]:
    """Score a run's best checkpoint, or a registered model version, on held-out blobs.

    Args:
        run_id: the training run (the metrics are added to it)
        model: instead, a registered model version, models:/NAME/VERSION (its own run)
    """
    from torch import nn

    from blocktrain.train import accuracy, find_checkpoint
    from blocktrain.train import evaluate as evaluate_model
    from blocktrain.train.checkpoint import files as checkpoint

    path = find_checkpoint(run_id=run_id, model_uri=model)
    width = checkpoint.load(path)["args"]["width"]
    values = evaluate_model(
        network(width),
        blobs(96, seed=2),
        checkpoint_path=model or path,
        loss_fn=nn.functional.cross_entropy,
        metrics={"accuracy": accuracy},
    )
    print("RESULT " + json.dumps(values), flush=True)
    return values


def network(width: int) -> nn.Module:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(width * 36, len(CLASSES)),
    )  # fmt: skip


def blobs(count: int, seed: int) -> TensorDataset:
    """``count`` 1x6x6 images whose mean brightness is their class, with noise."""
    import torch
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (count,), generator=generator)
    images = torch.randn(count, 1, 6, 6, generator=generator) + labels.view(-1, 1, 1, 1) * 0.7
    return TensorDataset(images, labels)


if __name__ == "__main__":
    main(train, evaluate)
