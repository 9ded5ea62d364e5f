"""A LightningModule under blocktrain.lightning's Trainer, and the same network in a Fabric
loop: the entry functions of the Lightning tests' throw-away project. Dropout, momentum and a
per-step learning-rate schedule make any difference in a resume show in the weights."""

import time

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn
from torch.utils.data import TensorDataset

import blocktrain
import blocktrain.lightning as bl
from blocktrain.entry import main
from blocktrain.train import default_folder


def make_data(examples, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, 8, generator=generator)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(examples, 1, generator=generator)
    return TensorDataset(x, y)


def network(hidden):
    return nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Dropout(0.1), nn.Linear(hidden, 1))


class Regression(L.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 32, step_seconds: float = 0.0):
        super().__init__()
        # The pause is the test's, not the model's: it changes between attempts, and a param
        # of the run may not.
        self.save_hyperparameters(ignore=["step_seconds"])
        self.step_seconds = step_seconds
        self.net = network(hidden)

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_seconds)
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        if self.global_rank == 0 and self.global_step % 10 == 0:
            print(f"step {self.global_step} loss {loss.item():.4f}", flush=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.95)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@blocktrain.entrypoint
def train(
    *,
    epochs: int = 6,
    batch_size: int = 16,
    lr: float = 0.05,
    examples: int = 1024,
    step_seconds: float = 0.0,
    slow_attempts: int = 0,
    seed: int = 0,
    strategy: str = "auto",
) -> dict[str, float]:
    """Fit the regression with Lightning's Trainer.

    Args:
        epochs: passes over the data
        batch_size: examples per step and rank
        lr: learning rate
        examples: training examples
        step_seconds: a pause in every step, so that a test can interrupt it
        slow_attempts: pause only in the first so many attempts (0: in all)
        seed: seed of the weights and the data order
        strategy: Lightning's strategy argument
    """
    tracker = blocktrain.current()
    attempt = tracker.attempt if tracker is not None else 1
    pause = step_seconds if slow_attempts == 0 or attempt <= slow_attempts else 0.0
    torch.manual_seed(seed)
    model = Regression(lr=lr, step_seconds=pause)
    trainer = bl.trainer(
        max_epochs=epochs, strategy=strategy, every_steps=40, log_every_n_steps=5,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    train_loader = bl.DataLoader(make_data(examples, seed + 1), batch_size=batch_size, shuffle=True)
    val_loader = bl.DataLoader(make_data(256, seed + 2), batch_size=64)
    trainer.fit(model, train_loader, val_loader, ckpt_path=bl.resume_path())
    folder = default_folder()
    if trainer.is_global_zero:
        torch.save(model.state_dict(), folder.parent / "final.pt")
    return {"val_loss": float(trainer.callback_metrics["val_loss"])}


@blocktrain.entrypoint
def train_fabric(
    *,
    epochs: int = 4,
    batch_size: int = 16,
    lr: float = 0.05,
    examples: int = 1024,
    step_seconds: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Fit the regression in a Fabric loop.

    Args:
        epochs: passes over the data
        batch_size: examples per step and rank
        lr: learning rate
        examples: training examples
        step_seconds: a pause in every step, so that a test can interrupt it
        seed: seed of the weights and the data order
    """
    fabric = bl.fabric()
    torch.manual_seed(seed)
    model = network(32)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(
        bl.DataLoader(make_data(examples, seed + 1), batch_size=batch_size, shuffle=True)
    )
    state = {"model": model, "optimizer": optimizer, "loader": loader, "epoch": 0}
    restarts = bl.Restarts(fabric, state, every_steps=40)
    restarts.resume()
    loss = torch.zeros(())
    for epoch in range(state["epoch"], epochs):
        state["epoch"] = epoch
        model.train()
        for x, y in loader:
            time.sleep(step_seconds)
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            restarts.step()
            if fabric.is_global_zero and restarts.step_count % 10 == 0:
                print(f"step {restarts.step_count} loss {loss.item():.4f}", flush=True)
                fabric.log("train_loss", loss.item(), step=restarts.step_count)
    restarts.finish()
    folder = default_folder()
    if fabric.is_global_zero:
        torch.save(model.state_dict(), folder.parent / "final.pt")
    return {"train_loss": float(loss.item())}


if __name__ == "__main__":
    main(train, train_fabric)
