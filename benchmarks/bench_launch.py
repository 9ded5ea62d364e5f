"""How long a submission and a look at the queue take, beside the bare tools, on one cluster.

    .venv/bin/python benchmarks/bench_launch.py        (make bench)

Starts a private local Slurm cluster (scripts/local-slurm) with its nodes drained, so every job
stays pending and no training competes with the timings, then measures in interleaved rounds:

- ``sbatch --wrap``;
- a bare submitit script (``AutoExecutor(...).submit(fn)``, Python start-up and the submitit
  import included): the baseline of the launch ratio;
- ``slurm-launch train --args exp.yaml`` to its job line: the run created in the project's
  SQLite MLflow store (made by one launch before the rounds), the code frozen, the job and its
  watcher submitted;
- the same with an entry module that imports torch at its top (its one line says the cost);
- ``squeue``, ``sacct`` (the baseline of the status ratio) and ``slurm-status --all`` over the
  runs launched.

Prints medians, and the ratios against the baselines (goals: launch <= 2x the submitit script,
status <= 2x sacct). Asserts nothing. The machine should be otherwise idle.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROUNDS = 9
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "tests" / "shapes_demo.py"
SCRIPT = [sys.executable, str(REPO / "scripts" / "local-slurm")]

SUBMITIT_SCRIPT = """\
import submitit

executor = submitit.AutoExecutor(folder="submitit-logs", cluster="slurm")
executor.update_parameters(
    slurm_partition="debug", timeout_min=30, nodes=1, tasks_per_node=2, cpus_per_task=1,
    mem_gb=2,
)
job = executor.submit(print, "hello")
print(job.job_id)
"""

HEAVY_ENTRY = """\
import torch
from torch import nn


def train(*, steps: int = 1) -> None:
    \"\"\"Train a linear model.

    Args:
        steps: how many steps
    \"\"\"
    model = nn.Linear(2, 1)
    for _ in range(steps):
        model(torch.zeros(1, 2)).sum().backward()
"""


def make_project(root: Path, module: str, source: str) -> None:
    root.mkdir()
    (root / "pyproject.toml").write_text(f'[tool.blocktrain]\nentry-module = "{module}"\n')
    (root / f"{module}.py").write_text(source)
    (root / "slurm").mkdir()
    shutil.copy(REPO / "slurm" / "local.yaml", root / "slurm" / "local.yaml")
    (root / "exp.yaml").write_text("steps: 5\n")
    (root / "submit.py").write_text(SUBMITIT_SCRIPT)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    git = ["git", "-C", str(root), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], check=True)


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return took, done.stderr


def drain(env: dict[str, str]) -> None:
    nodes = subprocess.run(
        ["sinfo", "-h", "-o", "%N"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        ["scontrol", "update", f"NodeName={nodes}", "State=DRAIN", "Reason=benchmark"],
        env=env, check=True,
    )  # fmt: skip


def main() -> int:
    if shutil.which("sbatch") is None:
        print("not measured: no Slurm commands on PATH (make test-packages)")  # noqa: T201
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as folder:
        root = Path(folder)
        state = root / "cluster"
        up = subprocess.run(
            [*SCRIPT, "up", "--dir", str(state)], capture_output=True, text=True, check=False
        )
        if up.returncode != 0:
            print(f"not measured: no cluster ({up.stderr.strip()[-300:]})")  # noqa: T201
            return 0
        try:
            env = {**os.environ, "SLURM_CONF": str(state / "etc" / "slurm.conf")}
            drain(env)
            measure(root, env)
        finally:
            subprocess.run(
                [*SCRIPT, "down", "--dir", str(state), "--purge"], capture_output=True, check=False
            )
    return 0


def measure(root: Path, env: dict[str, str]) -> None:
    light, heavy = root / "light", root / "heavy"
    make_project(light, "shapes_demo", DEMO.read_text())
    make_project(heavy, "heavy", HEAVY_ENTRY)
    launch = [str(BIN / "slurm-launch"), "train", "--args", "exp.yaml"]
    for project in (light, heavy):  # each project's first launch creates its MLflow database
        timed(launch, project, env)
    rows: dict[str, Callable[[], tuple[float, str]]] = {
        "sbatch --wrap": lambda: timed(["sbatch", "--wrap", "true", "-p", "debug"], light, env),
        "submitit script": lambda: timed([sys.executable, "submit.py"], light, env),
        "slurm-launch": lambda: timed(launch, light, env),
        "slurm-launch, torch at module top": lambda: timed(launch, heavy, env),
        "squeue": lambda: timed(["squeue"], light, env),
        "sacct": lambda: timed(["sacct", "-X"], light, env),
        "slurm-status --all": lambda: timed([str(BIN / "slurm-status"), "--all"], light, env),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    said = ""
    for _ in range(ROUNDS):
        for name, run in rows.items():
            took, stderr = run()
            times[name].append(took)
            if name == "slurm-launch, torch at module top":
                said = stderr.strip()
    median = {name: statistics.median(values) for name, values in times.items()}
    load = os.getloadavg()[0]
    print(  # noqa: T201
        f"median (min-max) of {ROUNDS} interleaved rounds, nodes drained (jobs stay pending); "
        f"load average {load:.2f} on {os.cpu_count()} CPUs"
    )
    for name, seconds in median.items():
        low, high = min(times[name]) * 1000, max(times[name]) * 1000
        print(f"{name:<36} {seconds * 1000:8.1f} ms  ({low:.1f}-{high:.1f})")  # noqa: T201
    ratios = [
        ("slurm-launch / submitit script", "slurm-launch", "submitit script", 2.0),
        ("slurm-launch / sbatch --wrap", "slurm-launch", "sbatch --wrap", None),
        ("torch-at-top / submitit script", "slurm-launch, torch at module top", "submitit script",
         None),
        ("slurm-status --all / sacct", "slurm-status --all", "sacct", 2.0),
        ("slurm-status --all / squeue", "slurm-status --all", "squeue", None),
    ]  # fmt: skip
    for label, top, bottom, goal in ratios:
        goal_text = f"  (goal <= {goal:.1f})" if goal else ""
        print(f"{label:<36} {median[top] / median[bottom]:8.2f}{goal_text}")  # noqa: T201
    print(f"the torch-at-top launch said: {said or '(nothing)'}")  # noqa: T201


if __name__ == "__main__":
    raise SystemExit(main())
