"""Fit a small MLP to a noisy synthetic regression task.

Usage: python train.py train --args experiments/baseline.yaml --lr 0.05
"""

import itertools
import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import blocktrain
from blocktrain import restart
from blocktrain.entry import main
from blocktrain.train import default_folder
from blocktrain.train.checkpoint import files as checkpoint


def make_data(examples, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, 8, generator=generator)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(examples, 1, generator=generator)
    return TensorDataset(x, y)


def evaluate(model, loader):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            total += nn.functional.mse_loss(model(x), y, reduction="sum").item()
            count += len(x)
    return total / count


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
    """Fit a small MLP to a noisy synthetic regression task.

    Args:
        epochs: passes over the data
        batch_size: examples per optimizer step
        lr: learning rate
        momentum: SGD momentum
        hidden: hidden units
        examples: training examples
        seed: seed of the weights, the data and its order
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    train_set = make_data(examples, seed=seed + 1)
    val_set = make_data(1024, seed=seed + 2)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=256)

    model = nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    folder = default_folder()  # the run's own: .blocktrain/runs/<run id>/checkpoints
    first_epoch, skip = 0, 0
    newest = checkpoint.newest_good(folder)
    if newest is not None:
        state = checkpoint.load(newest)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        first_epoch, skip = state["epoch"], state["done"]
        print(f"resumed from epoch {first_epoch} batch {skip}", flush=True)

    def save(epoch, done, rng):
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        state |= {"epoch": epoch, "done": done, "rng": rng}
        checkpoint.save(state, folder, epoch * len(train_loader) + done)
        checkpoint.prune(folder, keep_last=2)

    for epoch in range(first_epoch, epochs):
        # The shuffle draws from torch's generator as the epoch starts: a resume replays it
        # from this state and skips the batches already done.
        rng = checkpoint.rng_state()
        model.train()
        for done, (x, y) in enumerate(itertools.islice(train_loader, skip, None), skip + 1):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            if restart.should_stop():  # Slurm's warning, a preemption or slurm-stop
                save(epoch, done, rng)
                restart.stop_now()  # requeues the job; the next attempt resumes above
        val_loss = evaluate(model, val_loader)
        print(f"epoch {epoch} val_loss {val_loss:.4f}", flush=True)
        blocktrain.log_metrics({"val_loss": val_loss}, step=epoch)
        save(epoch + 1, 0, checkpoint.rng_state())
        skip = 0

    torch.save(model.state_dict(), folder.parent / "model.pt")
    return {"val_loss": evaluate(model, val_loader)}


if __name__ == "__main__":
    main(train)
