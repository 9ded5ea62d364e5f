"""Fit a small MLP to a noisy synthetic regression task with Lightning.

Usage: python train.py --epochs 20 --lr 0.05
"""

import argparse

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20, help="passes over the data")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--hidden", type=int, default=64, help="hidden units")
    parser.add_argument("--examples", type=int, default=4096, help="training examples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    L.seed_everything(args.seed)
    model = Regression(lr=args.lr, momentum=args.momentum, hidden=args.hidden)
    train_set = make_data(args.examples, seed=args.seed + 1)
    val_set = make_data(1024, seed=args.seed + 2)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=256)

    trainer = L.Trainer(
        max_epochs=args.epochs,
        logger=MLFlowLogger(experiment_name="regression"),
        callbacks=[ModelCheckpoint(every_n_train_steps=100, save_last=True)],
    )
    trainer.fit(model, train_loader, val_loader, ckpt_path="last")
    torch.save(model.state_dict(), "model.pt")


if __name__ == "__main__":
    main()
