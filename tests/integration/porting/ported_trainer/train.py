"""Fit a small MLP to a noisy synthetic regression task.

Usage: python train.py train --args experiments/baseline.yaml --lr 0.05
"""

import torch
from torch import nn
from torch.utils.data import TensorDataset

import blocktrain
from blocktrain.entry import main
from blocktrain.train import CheckpointConfig, ExportConfig, TrainConfig, Trainer, default_folder


def make_data(examples, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, 8, generator=generator)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(examples, 1, generator=generator)
    return TensorDataset(x, y)


@blocktrain.entrypoint
def train(
    *,
    loop: TrainConfig = TrainConfig(epochs=20, batch_size=32),
    lr: float = 0.05,
    momentum: float = 0.9,
    hidden: int = 64,
    examples: int = 4096,
) -> dict[str, float]:
    """Fit a small MLP to a noisy synthetic regression task.

    Args:
        loop: epochs, batch size (over all ranks), seed and the other settings of the loop
        lr: learning rate
        momentum: SGD momentum
        hidden: hidden units
        examples: training examples
    """
    torch.manual_seed(loop.seed)

    train_set = make_data(examples, seed=loop.seed + 1)
    val_set = make_data(1024, seed=loop.seed + 2)

    model = nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    trainer = Trainer(
        model,
        optimizer,
        nn.functional.mse_loss,
        config=loop,
        checkpoint=CheckpointConfig(folder=default_folder(), every_minutes=10),
        export=ExportConfig(formats=("pth",), weights="last", plots=False),
    )
    return trainer.fit(train_set, val_set)


if __name__ == "__main__":
    main(train)
