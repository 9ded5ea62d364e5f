"""Two nodes against one: DDP step time of a 2x2 job against a 1x4 job with the same global
batch, and seconds from a requeue to the first training step of a 2-node job beside a 1-node
job, on a local cluster of two nodes (scripts/local-slurm up --nodes 2: root and iproute2).

    .venv/bin/python benchmarks/bench_multinode.py        (make bench)

Each task of a job runs this file with ``--child``: it sets up torch.distributed from Slurm's
variables (blocktrain.distributed.process_group, Gloo), loads the checkpoint its job left if
there is one, and trains an MLP of 2.1 M parameters (8 MB of gradients reduced each step) on a
global batch of 256, one thread per task. Rank 0 prints when its first step ends and the median
time of the steps after a warm-up. Step time: each job shape once, one after the other. Requeue:
the job is requeued (`scontrol requeue`) once its first attempt has trained a step, and the
time runs from that command to the first step of the next attempt, which includes Slurm's
requeue delay (the cluster's cred_expire + 1 = 11 s), the launch, Python's start-up, the
rendezvous and the checkpoint load. The two nodes share this machine's cores, and their traffic
crosses a veth pair and a bridge instead of a network: the ratios say what crossing nodes costs
the toolkit, not what a real network costs. Prints the figures and their ratios; asserts
nothing. Skipped (with a line saying why) when not root or when Slurm is not installed.
BLOCKTRAIN_BENCH_DIR names the folder to write in (default: a temporary one).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SCRIPT = HERE.parents[1] / "scripts" / "local-slurm"
WIDTH = 1024
GLOBAL_BATCH = 256
STEPS = 60
WARMUP = 10
LONG_RUN = 100_000  # steps of a job that is requeued long before it would end
SHAPES = {"2x2": (2, 2), "1x4": (1, 4)}  # nodes, tasks per node


def child(folder: Path, steps: int) -> None:
    """One task: train ``steps`` steps with DDP; rank 0 reports its first step and step time."""
    import torch
    from torch import nn

    from blocktrain.distributed import exit_without_finalizing, process_group

    torch.set_num_threads(1)
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    with process_group() as place:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(WIDTH, WIDTH),
            nn.ReLU(),
            nn.Linear(WIDTH, WIDTH),
            nn.ReLU(),
            nn.Linear(WIDTH, 10),
        )
        net = nn.parallel.DistributedDataParallel(model) if place.is_distributed else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        checkpoint = folder / "state.pt"
        if checkpoint.exists():
            model.load_state_dict(torch.load(checkpoint))
        generator = torch.Generator().manual_seed(place.rank)
        per_rank = GLOBAL_BATCH // place.world_size
        took: list[float] = []
        for step in range(steps):
            inputs = torch.randn(per_rank, WIDTH, generator=generator)
            targets = torch.randint(0, 10, (per_rank,), generator=generator)
            started = time.perf_counter()
            loss = nn.functional.cross_entropy(net(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            took.append(time.perf_counter() - started)
            if step == 0 and place.rank == 0:
                torch.save(model.state_dict(), checkpoint)
                print(f"FIRST_STEP {restart} {time.time()}", flush=True)  # noqa: T201
        if place.rank == 0:
            print(f"STEP_S {statistics.median(took[WARMUP:])}", flush=True)  # noqa: T201
    exit_without_finalizing()


def local_slurm(state: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--dir", str(state)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def submit(env: dict[str, str], folder: Path, shape: tuple[int, int], steps: int) -> str:
    nodes, tasks = shape
    folder.mkdir(parents=True)
    command = f"srun {sys.executable} {HERE} --child {folder} {steps}"
    done = subprocess.run(
        ["sbatch", "--parsable", "--requeue", f"--nodes={nodes}", f"--ntasks-per-node={tasks}",
         "--mem=2G", f"--output={folder / 'job.out'}", "--open-mode=append", "--wrap", command],
        env=env, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip().split(";")[0]


def wait_for(folder: Path, pattern: str, timeout: float = 600) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    out = folder / "job.out"
    while time.monotonic() < deadline:
        match = re.search(pattern, out.read_text()) if out.exists() else None
        if match is not None:
            return match
        time.sleep(0.1)
    raise TimeoutError(f"no {pattern!r} in {out} after {timeout:.0f} s")


def step_time(env: dict[str, str], folder: Path, shape: tuple[int, int]) -> float:
    submit(env, folder, shape, STEPS)
    return float(wait_for(folder, r"STEP_S (\S+)").group(1))


def requeue_to_first_step(env: dict[str, str], folder: Path, shape: tuple[int, int]) -> float:
    job = submit(env, folder, shape, LONG_RUN)
    wait_for(folder, r"FIRST_STEP 0 ")
    requeued = time.time()
    subprocess.run(["scontrol", "requeue", job], env=env, check=True, timeout=60)
    first = float(wait_for(folder, r"FIRST_STEP 1 (\S+)").group(1))
    subprocess.run(["scancel", job], env=env, check=True, timeout=60)
    return first - requeued


def measure(state: Path) -> None:
    local_slurm(state, "up", "--nodes", "2", "--cpus", "4")
    env = {**os.environ, "SLURM_CONF": str(state / "etc" / "slurm.conf")}
    try:
        steps = {name: step_time(env, state / f"step-{name}", s) for name, s in SHAPES.items()}
        requeue = {
            name: requeue_to_first_step(env, state / f"requeue-{name}", s)
            for name, s in SHAPES.items()
        }
    finally:
        local_slurm(state, "down", "--purge")
    print(  # noqa: T201
        f"DDP step, MLP of 2.1 M parameters, global batch {GLOBAL_BATCH}, Gloo, median of "
        f"{STEPS - WARMUP}: 2 nodes x 2 tasks {steps['2x2'] * 1e3:.1f} ms, 1 node x 4 tasks "
        f"{steps['1x4'] * 1e3:.1f} ms (ratio {steps['2x2'] / steps['1x4']:.2f})"
    )
    print(  # noqa: T201
        f"scontrol requeue to the next attempt's first step: 2 nodes x 2 tasks "
        f"{requeue['2x2']:.1f} s, 1 node x 4 tasks {requeue['1x4']:.1f} s "
        f"(ratio {requeue['2x2'] / requeue['1x4']:.2f})"
    )


def main() -> None:
    if "--child" in sys.argv:
        child(Path(sys.argv[2]), int(sys.argv[3]))
        return
    if os.geteuid() != 0 or shutil.which("slurmd", path="/usr/sbin:/usr/bin") is None:
        print("skipped: a cluster of several nodes needs root and Slurm's daemons")  # noqa: T201
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("BLOCKTRAIN_BENCH_DIR")) as tmp:
        measure(Path(tmp) / "slurm")


if __name__ == "__main__":
    main()
