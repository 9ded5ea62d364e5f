"""Two real processes on Gloo: process_group, all_agree, collectives, DDP training, checkpoints.

The tests start this file as a script once per rank, with torch-style or Slurm variables as a
launcher would set them; each rank prints one ``RESULT {json}`` line for the test to compare.
Every run has a deadline, so a rank waiting for a peer that died cannot hang the suite.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve()
WORLD = 2
DEADLINE_S = 180
PG_TIMEOUT_S = 120
STEPS = 5


def rank_env(rank: int, port: int, launcher: str) -> dict[str, str]:
    from gloo_ranks import clean_env, torch_env

    if launcher == "torch":
        return {**clean_env(), **torch_env(rank, WORLD, port)}
    # What srun gives each task (the port derived from the job id is overridden).
    return {
        **clean_env(),
        "SLURM_JOB_ID": "777",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_NTASKS": str(WORLD),
        "SLURM_JOB_NODELIST": "localhost",
        "BLOCKTRAIN_MASTER_PORT": str(port),
    }


def run_ranks(scenario: str, folder: Path, launcher: str = "torch") -> list[dict[str, Any]]:
    """Run ``scenario`` in WORLD processes; fail with their logs unless all succeed in time."""
    from gloo_ranks import free_port, run_ranks

    port = free_port()
    return run_ranks(
        [sys.executable, str(HERE), scenario, str(folder)],
        [rank_env(rank, port, launcher) for rank in range(WORLD)],
        [folder / f"rank{rank}.log" for rank in range(WORLD)],
        DEADLINE_S,
    )


@pytest.mark.parametrize("launcher", ["torch", "slurm"])
def test_all_agree_and_all_reduce(tmp_path: Path, launcher: str) -> None:
    results = run_ranks("agree", tmp_path, launcher)
    for rank, result in enumerate(results):
        assert result == {
            "rank": rank,
            "backend": "gloo",
            "group_gone_after_error": True,
            "one_says_stop": True,
            "none_says_stop": False,
            "all_say_stop": True,
            # rank 1's flag, nobody's flag, the mean of 3 and 4 steps (rounded down)
            "agreed": [True, False, 3],
            # (1*1 + 2*3) / (1 + 3), (0*2 + 1*2) / 4: every example weighs the same; the lr
            # is each rank's own
            "points": [[4, {"train_loss": 1.75, "lr": rank}], [8, {"train_loss": 0.5, "lr": rank}]],
            "flushed": [[12, {"train_loss": 2.0}], [16, {"train_loss": 3.0}]],
            "kept": [False, True, 1],
            "sum": 3.0,
            "reduction_sum": 3,
            "is_rank_zero": rank == 0,
            "group_gone_after": True,
        }


def test_ddp_checkpoint_loads_identically_on_every_rank(tmp_path: Path) -> None:
    results = run_ranks("ddp", tmp_path)
    assert results[0]["checkpoint"] == results[1]["checkpoint"] == f"step-{STEPS:09d}.pt"
    assert results[0]["digests"] == results[1]["digests"]
    assert len(set(results[0]["digests"])) == 1  # rank 0's load matches rank 1's


# ---- what each rank runs -------------------------------------------------------------------


def crash_inside_group() -> None:
    from blocktrain.distributed import barrier, process_group

    with process_group(timeout_s=PG_TIMEOUT_S):
        # Every rank is done joining before any tears the group down: a rank still
        # connecting to one that already left would fail, or join the next group's store.
        barrier()
        raise KeyError("a crash inside the block")


def agree_scenario() -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from blocktrain.distributed import (
        Reduction,
        all_agree,
        barrier,
        is_rank_zero,
        process_group,
    )

    with contextlib.suppress(KeyError):
        crash_inside_group()
    result: dict[str, Any] = {"group_gone_after_error": not dist.is_initialized()}
    with process_group(timeout_s=PG_TIMEOUT_S) as place:
        result["rank"] = place.rank
        result["backend"] = str(dist.get_backend())
        result["one_says_stop"] = all_agree(place.rank == 1)
        result["none_says_stop"] = all_agree(False)
        result["all_say_stop"] = all_agree(True)
        result.update(exchange_scenario(place.rank))
        reduced = Reduction(torch.tensor([place.rank + 1], dtype=torch.int64)).result()
        result["reduction_sum"] = int(reduced.item())
        total = torch.tensor([place.rank + 1.0])
        dist.all_reduce(total)
        result["sum"] = total.item()
        result["is_rank_zero"] = is_rank_zero()
        barrier()
    result["group_gone_after"] = not dist.is_initialized()
    return result


def exchange_scenario(rank: int) -> dict[str, Any]:
    import torch

    from blocktrain.train.exchange import Exchange
    from blocktrain.train.metrics import Totals

    cpu = torch.device("cpu")
    exchange, totals = Exchange(WORLD, cpu), Totals(cpu)
    # Rank 0 saw 1 example of loss 1 then 2 of loss 0; rank 1 saw 3 of loss 2 then 2 of loss 1.
    totals.add_mean("train_loss", torch.tensor([1.0, 2.0][rank]), [1, 3][rank])
    exchange.close(4, totals, {"lr": rank})
    totals.add_mean("train_loss", torch.tensor(float(rank)), 2)
    exchange.close(8, totals, {"lr": rank})
    exchange.start(stop=rank == 1, steps=3 + rank)
    agreed, points = exchange.collect()
    assert agreed is not None
    # A flush waits for the exchange in flight and reduces what was closed after it.
    totals.add_mean("train_loss", torch.tensor(2.0), 1)
    exchange.close(12, totals, {})
    exchange.start(checkpoint_due=rank == 0, steps=1)
    totals.add_mean("train_loss", torch.tensor(3.0), 1)
    exchange.close(16, totals, {})
    flushed = exchange.flush()
    kept, _ = exchange.collect()
    assert kept is not None
    return {
        "agreed": [agreed.stop, agreed.checkpoint_due, agreed.steps],
        "points": [[p.index, p.values] for p in points],
        "flushed": [[p.index, p.values] for p in flushed],
        "kept": [kept.stop, kept.checkpoint_due, kept.steps],
    }


def ddp_scenario(folder: Path) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from blocktrain.distributed import barrier, is_rank_zero, process_group
    from blocktrain.train.checkpoint.files import load, newest_good, rng_state, save

    with process_group(timeout_s=PG_TIMEOUT_S) as place:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        initial = [p.detach().clone() for p in model.parameters()]
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        data = torch.Generator().manual_seed(100 + place.rank)  # each rank its own batches
        for _ in range(STEPS):
            x = torch.randn(16, 4, generator=data)
            loss = nn.functional.mse_loss(ddp(x), x.sum(dim=1, keepdim=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert not all(torch.equal(a, b) for a, b in zip(initial, model.parameters(), strict=True))
        checkpoint = folder / "checkpoints"
        if is_rank_zero():  # the unwrapped module's state: no "module." prefixes
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            save({**state, "step": STEPS, "rng": rng_state()}, checkpoint, STEPS)
        barrier()
        path = newest_good(checkpoint)
        assert path is not None
        loaded = load(path)["model"]
        live = model.state_dict()
        assert loaded.keys() == live.keys()
        assert all(torch.equal(loaded[name], live[name]) for name in live)
        digest = hashlib.sha256(b"".join(loaded[name].numpy().tobytes() for name in sorted(loaded)))
        digests: list[Any] = [None] * place.world_size
        dist.all_gather_object(digests, digest.hexdigest())
    return {"checkpoint": path.name, "digests": digests}


def main(scenario: str, folder: Path) -> None:
    result = agree_scenario() if scenario == "agree" else ddp_scenario(folder)
    print("RESULT " + json.dumps(result), flush=True)
    from blocktrain.distributed import exit_without_finalizing

    exit_without_finalizing()  # as a launched task does (PyTorch's Gloo abort at exit)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
