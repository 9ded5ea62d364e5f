"""One training as a launched task runs it, for the engine's multi-process tests.

``python train_job.py FOLDER OPTIONS_JSON`` trains a small CNN with the engine under
``process_group()`` (torch-style variables make it one of several Gloo ranks), checkpointing
into FOLDER/checkpoints. With ``stop_at`` the restart protocol is installed and rank
``stop_rank`` signals itself during that training step, as Slurm would before a time limit.
Prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any


def dataset(count: int, seed: int) -> Any:
    import torch
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (count,), generator=generator)
    images = torch.randn(count, 1, 6, 6, generator=generator) * 0.5 + labels.view(-1, 1, 1, 1)
    return TensorDataset(images, labels)


def network(dropout: float, batchnorm: bool = False) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    norm = [nn.BatchNorm2d(4)] if batchnorm else []  # running statistics drift per rank
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), *norm, nn.ReLU(), nn.Dropout(dropout), nn.Flatten(),
        nn.Linear(4 * 36, 3),
    )  # fmt: skip


def digest(state: dict[str, Any]) -> str:
    hashed = hashlib.sha256()
    for name in sorted(state):
        hashed.update(name.encode() + state[name].contiguous().numpy().tobytes())
    return hashed.hexdigest()


def main(folder: Path, options: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch import nn

    from blocktrain import distributed, restart
    from blocktrain.errors import RequeueRequested
    from blocktrain.restart import RestartConfig
    from blocktrain.train import TrainConfig, Trainer, accuracy
    from blocktrain.train.checkpoint.files import CheckpointConfig

    torch.set_num_threads(1)  # two ranks share two busy cores
    stop_at = options.get("stop_at")
    watching = (
        restart.protocol(
            RestartConfig(run_dir=folder / "run", marker_dir=folder / "markers", job_key="job")
        )
        if stop_at is not None
        else contextlib.nullcontext()
    )
    with watching, distributed.process_group(timeout_s=30) as place:
        model = network(options.get("dropout", 0.0), options.get("batchnorm", False))
        calls = 0

        def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            if outputs.requires_grad:
                calls += 1
                if calls == stop_at and place.rank == options.get("stop_rank", 0):
                    signal.raise_signal(signal.SIGUSR2)
                time.sleep(options.get("step_sleep", 0.0))  # steps as slow as a real model's
            return nn.functional.cross_entropy(outputs, targets)

        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        trainer = Trainer(
            model,
            optimizer,
            loss_fn,
            config=TrainConfig(
                epochs=3, batch_size=8, log_every_steps=5, **options.get("config", {})
            ),
            scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.7),
            metrics={"accuracy": accuracy},
            checkpoint=CheckpointConfig(folder=folder / "checkpoints", every_steps=4),
        )
        val = dataset(25, seed=2)  # 13 and 12 examples on two ranks
        if options.get("evaluate_saved"):
            # The model a run saved, evaluated on its own: what its metrics must describe.
            from blocktrain.train.checkpoint.files import load, newest_good

            saved = newest_good(folder / "checkpoints")
            assert saved is not None
            model.load_state_dict(load(saved, weights_only=False)["model"])
            return {"rank": place.rank, "values": trainer.evaluate(val).values}
        before = trainer.evaluate(val).values
        try:
            values, outcome = trainer.fit(dataset(48, seed=1), val), "finished"
        except RequeueRequested:
            values, outcome = {}, "requeued"
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return {
            "rank": place.rank,
            "world": place.world_size,
            "outcome": outcome,
            "step": trainer.progress.step,
            "digest": digest(state),
            "params": torch.cat([v.flatten() for v in state.values()]).tolist(),
            "before": before,
            "values": values,
            "history": trainer.progress.history,
        }


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), json.loads(sys.argv[2]))
    print("RESULT " + json.dumps(result), flush=True)
    from blocktrain.distributed import exit_without_finalizing

    exit_without_finalizing()  # as a launched task does (PyTorch's Gloo abort at exit)
