"""Fit a small MLP to a noisy synthetic regression task with Lightning.

Usage: python train.py train --args experiments/baseline.yaml --lr 0.05
"""

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import blocktrain
import blocktrain.lightning as bl
from blocktrain.entry import main
from blocktrain.train import default_folder


def make_data(examples, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, 8, generator=generator)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(examples, 1, generator=generator)
    return TensorDataset(x, y)


class Regression(L.LightningModule):
    def __init__(self, lr=0.05, momentum=0.9, hidden=64):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(
            self.parameters(), lr=self.hparams["lr"], momentum=self.hparams["momentum"]
        )


@blocktrain.entrypoint
def train(
    *,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    hidden: int = 64,
    examples: int = 4096,
    seed: int = 0,
) -> dict[str, float]:
    """Fit a small MLP to a noisy synthetic regression task with Lightning.

    Args:
        epochs: passes over the data
        batch_size: examples per step and rank
        lr: learning rate
        momentum: SGD momentum
        hidden: hidden units
        examples: training examples
        seed: seed of the weights and the data order
    """
    L.seed_everything(seed)
    model = Regression(lr=lr, momentum=momentum, hidden=hidden)
    train_set = make_data(examples, seed=seed + 1)
    val_set = make_data(1024, seed=seed + 2)
    train_loader = bl.DataLoader(train_set, batch_size=batch_size, shuffle=True, seed=seed)
    val_loader = DataLoader(val_set, batch_size=256)

    trainer = bl.trainer(
        max_epochs=epochs,
        callbacks=[ModelCheckpoint(every_n_train_steps=100, save_last=True)],
        every_steps=100,
    )
    trainer.fit(model, train_loader, val_loader, ckpt_path=bl.resume_path())
    folder = default_folder()  # the run's own: .blocktrain/runs/<run id>/checkpoints
    if trainer.is_global_zero:
        torch.save(model.state_dict(), folder.parent / "model.pt")
    return {"val_loss": float(trainer.callback_metrics["val_loss"])}


if __name__ == "__main__":
    main(train)
