"""Fit a small MLP to a noisy synthetic regression task.

Usage: python train.py train --args experiments/baseline.yaml --lr 0.05
"""

import itertools
import random

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

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


def every_rank_rng():
    """Each rank's generators (dropout draws from them), gathered for rank 0 to save."""
    mine = checkpoint.rng_state()
    states = [mine] * dist.get_world_size()  # each filled in with that rank's own
    dist.all_gather_object(states, mine)
    return states


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
        batch_size: examples per optimizer step on each rank
        lr: learning rate
        momentum: SGD momentum
        hidden: hidden units
        examples: training examples
        seed: seed of the weights, the data and its order
    """
    # slurm-launch runs the tasks in a process group (with torchrun, wrap this body in
    # blocktrain.distributed.process_group()).
    rank = dist.get_rank()
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)  # the same initial weights on every rank

    train_set = make_data(examples, seed=seed + 1)
    val_set = make_data(1024, seed=seed + 2)
    sampler = DistributedSampler(train_set, shuffle=True, seed=seed)
    # The loader draws its seed from a generator of its own, so that torch's, which dropout
    # draws from, holds nothing but the training's draws.
    train_loader = DataLoader(
        train_set, batch_size=batch_size, sampler=sampler, generator=torch.Generator()
    )
    val_loader = DataLoader(val_set, batch_size=256)

    net = nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Dropout(0.1), nn.Linear(hidden, 1))
    model = DistributedDataParallel(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.5)
    torch.manual_seed(seed + 100 + rank)  # each rank its own dropout draws

    folder = default_folder()  # the run's own: .blocktrain/runs/<run id>/checkpoints
    first_epoch, skip = 0, 0
    newest = checkpoint.newest_good(folder)
    if newest is not None:
        state = checkpoint.load(newest)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"][rank])
        first_epoch, skip = state["epoch"], state["done"]
        print(f"resumed from epoch {first_epoch} batch {skip}", flush=True)

    def save(epoch, done, rng):
        if rank == 0:
            state = {"model": net.state_dict(), "optimizer": optimizer.state_dict()}
            state |= {"scheduler": scheduler.state_dict()}
            state |= {"epoch": epoch, "done": done, "rng": rng}
            checkpoint.save(state, folder, epoch * len(train_loader) + done)
            checkpoint.prune(folder, keep_last=2)
        dist.barrier()  # no rank leaves before the checkpoint is whole

    for epoch in range(first_epoch, epochs):
        sampler.set_epoch(epoch)  # the epoch's order, the same on a resume
        model.train()
        for done, (x, y) in enumerate(itertools.islice(train_loader, skip, None), skip + 1):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            # A collective: every rank asks at every step, and all stop at the same one.
            if restart.should_stop():  # Slurm's warning, a preemption or slurm-stop
                save(epoch, done, every_rank_rng())
                restart.stop_now()  # requeues the job; the next attempt resumes above
        scheduler.step()
        val_loss = evaluate(net, val_loader)
        print(f"epoch {epoch} val_loss {val_loss:.4f}", flush=True)
        blocktrain.log_metrics({"val_loss": val_loss}, step=epoch)
        save(epoch + 1, 0, every_rank_rng())
        skip = 0

    if rank == 0:
        torch.save(net.state_dict(), folder.parent / "model.pt")
    return {"val_loss": evaluate(net, val_loader)}


if __name__ == "__main__":
    main(train)
