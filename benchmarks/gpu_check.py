"""Self-checks of the engine's GPU paths, with their throughput; for a machine with CUDA.

    .venv/bin/python benchmarks/gpu_check.py           (on a GPU node)
    .venv/bin/python benchmarks/gpu_check.py --cpu     (the same checks, small, on the CPU)

Trains torchvision's ResNet-18 on synthetic 3x64x64 images with the engine (pinned memory and
non-blocking copies come with CUDA) and checks, printing samples/s for each:

- fp32; AMP bf16; AMP fp16 with the gradient scaler (its scale must stay finite);
- channels_last (weights and inputs in that layout); torch.compile;
- an asynchronous checkpoint from GPU tensors (pinned buffers): its stall, and that the file
  holds exactly the model's weights;
- DistributedDataParallel over NCCL in two processes when there are two GPUs (else one):
  the ranks must end with identical weights.

Each check prints ok or FAILED; the exit status is the number of failures. Without CUDA (and
without --cpu) it says so and exits 2. Not part of ``make bench``: its name does not start
with ``bench_``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import TensorDataset

HERE = Path(__file__).resolve()
STEPS, WARMUP = 60, 10
SMALL = {"steps": 6, "warmup": 2, "batch": 8, "size": 32}


def sizes(cpu: bool) -> tuple[int, int, int, int]:
    """(steps, warm-up steps, global batch, image side)."""
    if cpu:
        return SMALL["steps"], SMALL["warmup"], SMALL["batch"], SMALL["size"]
    return STEPS, WARMUP, 256, 64


def images(count: int, side: int) -> TensorDataset:
    import torch
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (count,), generator=generator)
    pixels = torch.randn(count, 3, side, side, generator=generator) + labels.view(-1, 1, 1, 1) / 5
    return TensorDataset(pixels, labels)


def resnet() -> nn.Module:
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=10)


def digest(model: Any) -> str:  # noqa: ANN401
    hashed = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        hashed.update(name.encode() + value.detach().float().cpu().numpy().tobytes())
    return hashed.hexdigest()


def train(cpu: bool, **settings: Any) -> tuple[Any, float, list[float]]:  # noqa: ANN401
    """Train ResNet-18 with ``settings``; (trainer, samples/s after warm-up, losses)."""
    import torch
    from torch import nn

    from blocktrain.train import TrainConfig, Trainer

    steps, warmup, batch, side = sizes(cpu)
    device = torch.device("cpu") if cpu else None
    marks: list[float] = []
    losses: list[torch.Tensor] = []

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(outputs, targets)
        if outputs.requires_grad:
            losses.append(loss.detach())
            if len(losses) == warmup + 1:  # time from here: kernels chosen, graphs compiled
                if not cpu:
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())
        return loss

    model = resnet()
    config = TrainConfig(
        epochs=1, max_steps=steps, batch_size=batch, log_every_steps=10**6, **settings
    )
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        loss_fn,
        config=config,
        device=device,
    )
    trainer.fit(images(steps * batch, side))
    if not cpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - marks[0]
    return trainer, (steps - warmup) * batch / seconds, [float(x) for x in losses]


def check(name: str, test: Callable[[], str]) -> bool:
    try:
        detail = test()
    except Exception as exc:  # noqa: BLE001 - every check reports, the next one runs
        print(f"FAILED  {name}: {type(exc).__name__}: {exc}", flush=True)  # noqa: T201
        return False
    print(f"ok      {name}: {detail}", flush=True)  # noqa: T201
    return True


def finite(losses: list[float]) -> None:
    import math

    if not all(math.isfinite(x) for x in losses):
        raise AssertionError(f"non-finite losses: {losses}")


def precision_check(cpu: bool, precision: str) -> Callable[[], str]:
    def run() -> str:
        trainer, speed, losses = train(cpu, precision=precision)
        finite(losses)
        scale = ""
        if precision == "fp16":
            value = float(trainer.scaler.get_scale())
            if not (trainer.scaler.is_enabled() and 0 < value < float("inf")):
                raise AssertionError(
                    f"gradient scaler enabled={trainer.scaler.is_enabled()} scale={value}"
                )
            scale = f", loss scale {value:g}"
        return f"{speed:,.0f} samples/s{scale}"

    return run


def channels_last_check(cpu: bool) -> str:
    import torch

    trainer, speed, losses = train(cpu, channels_last=True)
    finite(losses)
    weight = trainer.model.conv1.weight
    if not weight.is_contiguous(memory_format=torch.channels_last):
        raise AssertionError("the first convolution's weight is not channels_last")
    return f"{speed:,.0f} samples/s"


def compile_check(cpu: bool) -> str:
    trainer, speed, losses = train(cpu, compile=True)
    finite(losses)
    keys = trainer.state_dict()["model"].keys()
    if any(k.startswith("_orig_mod.") for k in keys):
        raise AssertionError("a compiled model's checkpoint carries _orig_mod. prefixes")
    return f"{speed:,.0f} samples/s (after {sizes(cpu)[1]} warm-up steps)"


def checkpoint_check(cpu: bool) -> str:
    import torch

    from blocktrain.train.checkpoint import files as checkpoint
    from blocktrain.train.checkpoint.files import CheckpointConfig
    from blocktrain.train.checkpoint.saver import Checkpointer

    trainer, _, _ = train(cpu, precision="bf16")
    with tempfile.TemporaryDirectory() as tmp:
        saver = Checkpointer(
            CheckpointConfig(folder=Path(tmp), every_steps=1), writer=True, tracker=None
        )
        saver.save(trainer.state_dict(), 1)  # allocates the pinned buffers
        saver.wait()
        saver.save(trainer.state_dict(), 2)
        stall = saver.stall_s
        started = time.perf_counter()
        saver.wait()
        write = time.perf_counter() - started + stall
        saved = checkpoint.load(checkpoint.checkpoint_path(Path(tmp), 2))["model"]
    live = trainer.model.state_dict()
    if any(not torch.equal(saved[k], live[k].cpu()) for k in live):
        raise AssertionError("the checkpoint differs from the model's weights")
    return f"stall {stall * 1000:.1f} ms, write {write:.2f} s (stall / write {stall / write:.3f})"


def ddp_check(cpu: bool) -> str:
    import torch

    world = 2 if not cpu and torch.cuda.device_count() >= 2 else 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [sys.executable, str(HERE), "--ddp-child", *(["--cpu"] if cpu else [])]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise AssertionError(f"a rank failed: exit codes {[p.returncode for p in procs]}")
    results = [json.loads(out.rsplit("RESULT ", 1)[1]) for out in outputs]
    if len({r["digest"] for r in results}) != 1:
        raise AssertionError("the ranks ended with different weights")
    backend = results[0]["backend"]
    return f"{world} process(es), {backend}, {results[0]['speed']:,.0f} samples/s over all ranks"


def ddp_child(cpu: bool) -> None:
    import torch.distributed as dist

    from blocktrain.distributed import process_group

    with process_group(backend="gloo" if cpu else None, timeout_s=300):
        trainer, speed, losses = train(cpu, precision="fp32" if cpu else "bf16")
        finite(losses)
        backend = str(dist.get_backend()) if dist.is_initialized() else "no process group"
        result = {"digest": digest(trainer.model), "speed": speed, "backend": backend}
    print("RESULT " + json.dumps(result), flush=True)  # noqa: T201
    from blocktrain.distributed import exit_without_finalizing

    exit_without_finalizing()  # as a launched task does (PyTorch's Gloo abort at exit)


def main() -> int:
    cpu = "--cpu" in sys.argv
    if "--ddp-child" in sys.argv:
        ddp_child(cpu)
        return 0
    import torch

    if not cpu and not torch.cuda.is_available():
        print(  # noqa: T201
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a "
            "GPU node, or with --cpu to try the checks small on the CPU",
            file=sys.stderr,
        )
        return 2
    where = "CPU (small sizes)" if cpu else torch.cuda.get_device_name()
    steps, warmup, batch, side = sizes(cpu)
    print(  # noqa: T201
        f"{where}: ResNet-18, {batch}x3x{side}x{side} synthetic images, {steps} steps "
        f"({warmup} warm-up), torch {torch.__version__}",
        flush=True,
    )
    checks: dict[str, Callable[[], str]] = {
        "fp32": precision_check(cpu, "fp32"),
        "AMP bf16": precision_check(cpu, "bf16"),
    }
    if not cpu:
        checks["AMP fp16 + GradScaler"] = precision_check(cpu, "fp16")
    checks["channels_last"] = lambda: channels_last_check(cpu)
    checks["torch.compile"] = lambda: compile_check(cpu)
    checks["async checkpoint from the device"] = lambda: checkpoint_check(cpu)
    checks["DDP"] = lambda: ddp_check(cpu)
    return sum(not check(name, test) for name, test in checks.items())


if __name__ == "__main__":
    sys.exit(main())
