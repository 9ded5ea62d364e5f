"""A deterministic DDP training that checkpoints and resumes exactly: the launcher tests' job.

Each step's batch comes from a generator seeded by (seed, step, rank), so the data does not
depend on where an attempt started, and the checkpoint holds everything else (weights,
optimizer momentum, step).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import blocktrain
from blocktrain import restart
from blocktrain.train.checkpoint import files as checkpoint


@blocktrain.entrypoint
def train(
    *, steps: int = 200, step_seconds: float = 0.05, seed: int = 0, checkpoint_every: int = 50
) -> dict[str, float]:
    """Fit a small MLP to a smooth function with DDP, checkpointing and obeying restarts.

    Args:
        steps: optimizer steps in all
        step_seconds: pause after each step, to make the job last
        seed: seed of weights and data
        checkpoint_every: steps between periodic checkpoints
    """
    import torch
    import torch.distributed as dist
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    # DDP rebuilds its gradient buckets after its first step, and with more than two ranks the
    # new layout sums the ranks' gradients in another order: every attempt's first step would
    # round differently from the same step of an uninterrupted run. find_unused_parameters
    # keeps the first layout (one graph walk per step, nothing at this size).
    net = (
        nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        if distributed
        else model
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    folder = Path(os.environ.get("BLOCKTRAIN_CHECKPOINT_DIR", "checkpoints"))
    canary = os.environ.get("LAUNCH_TEST_CANARY")
    if canary is not None:  # a secret from the environment: printed, so logs must mask it
        print(f"canary {canary}", flush=True)
        digest = hashlib.sha256(canary.encode()).hexdigest()
        (folder.parent / f"canary-rank-{rank}.sha256").write_text(digest)
    start = 0
    newest = checkpoint.newest_good(folder)
    if newest is not None:
        state = checkpoint.load(newest)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        print(f"resumed from step {start}", flush=True)
    loss = torch.zeros(())
    for step in range(start, steps):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step * world + rank)
        x = torch.randn(32, 8, generator=generator)
        loss = nn.functional.mse_loss(net(x), torch.sin(x.sum(1, keepdim=True)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            blocktrain.log_metrics({"loss": loss.item()}, step=step)
            print(f"step {step} loss {loss.item():.6f}", flush=True)
        time.sleep(step_seconds)
        stopping = restart.should_stop()
        if stopping or (step + 1) % checkpoint_every == 0:
            if rank == 0:
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step + 1,
                }
                checkpoint.save(state, folder, step + 1)
            if distributed:
                dist.barrier()
        if stopping:
            print(f"stopping after step {step + 1}", flush=True)
            restart.stop_now()
    if rank == 0:
        torch.save(model.state_dict(), folder.parent / "final.pt")
    return {"final_loss": loss.item()}
