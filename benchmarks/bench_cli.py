"""How fast the job commands answer: ``slurm-status --all`` with 100 run records and
``slurm-launch --dry-run``, each beside ``python -c "import torch"`` measured in the same run.

    .venv/bin/python benchmarks/bench_cli.py        (make bench)

The status records are synthetic (jobs the cluster does not know), half of them finished by
their own status.json, so one refresh runs one squeue (for the other half) and one sacct (for
all). slurm-status asks a real cluster: BLOCKTRAIN_BENCH_SLURM_CONF names a running one's
slurm.conf; without it the benchmark starts a private cluster with scripts/local-slurm and
stops it at the end. It prints the median wall time of 5 runs of each command and the ratios;
it asserts nothing (goals: status < 0.3 s, dry-run < 0.5 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

RUNS = 100
REPEATS = 5
JOB_BASE = 9_000_000  # far above the ids a test cluster hands out
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "tests" / "shapes_demo.py"


def make_project(root: Path) -> None:
    (root / "pyproject.toml").write_text('[tool.blocktrain]\nentry-module = "shapes_demo"\n')
    for index in range(RUNS):
        run_id = f"{index:032x}"
        run_dir = root / ".blocktrain" / "runs" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps(record(run_id, index)))
        if index % 2:
            logs = root / ".blocktrain" / "logs" / run_id
            (logs / "attempt-1").mkdir(parents=True)
            status = {"status": "FINISHED", "attempt": 1, "metrics": {"val_loss": 0.5}}
            (logs / "status.json").write_text(json.dumps({**status, "updated": time.time()}))


def record(run_id: str, index: int) -> dict[str, object]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - 3600))
    return {
        "run_id": run_id,
        "entry": "shapes_demo:train",
        "args": {"steps": index},
        "profile": "local",
        "profile_values": {},
        "launch_id": f"{time.strftime('%Y%m%d-%H%M%S')}-{index:06d}",
        "created": stamp,
        "tracking_uri": "sqlite:///unused.db",
        "experiment": "bench",
        "jobs": [{"job_id": str(JOB_BASE + index), "submitted": stamp}],
    }


def median_wall(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    times: list[float] = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_launch_project(root: Path) -> None:
    """A project whose ``train`` is tests/shapes_demo.py's, for ``slurm-launch --dry-run``."""
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.blocktrain]\nentry-module = "shapes_demo"\n')
    shutil.copy(DEMO, root / DEMO.name)
    (root / "slurm").mkdir()
    shutil.copy(REPO / "slurm" / "local.yaml", root / "slurm" / "local.yaml")
    (root / "exp.yaml").write_text("steps: 50\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)


@contextlib.contextmanager
def cluster() -> Iterator[str | None]:
    """A running cluster's slurm.conf: the given one, else a private one for this run."""
    given = os.environ.get("BLOCKTRAIN_BENCH_SLURM_CONF")
    if given:
        yield str(Path(given).resolve())
        return
    script = [sys.executable, str(REPO / "scripts" / "local-slurm")]
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as folder:
        up = subprocess.run(
            [*script, "up", "--dir", folder], capture_output=True, text=True, check=False
        )
        if up.returncode != 0:
            print(f"no cluster for slurm-status: {up.stderr.strip().splitlines()[-1:]}")  # noqa: T201
            yield None
            return
        try:
            yield str(Path(folder) / "etc" / "slurm.conf")
        finally:
            subprocess.run(
                [*script, "down", "--dir", folder, "--purge"], capture_output=True, check=False
            )


def report(name: str, seconds: float, torch_s: float) -> None:
    print(  # noqa: T201
        f"{name:<34} {seconds * 1000:7.1f} ms  (median of {REPEATS}; "
        f"{seconds / torch_s:5.3f} x import torch)"
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as folder:
        root = Path(folder)
        torch_s = median_wall([sys.executable, "-c", "import torch"], root, dict(os.environ))
        label = "python -c 'import torch'"
        print(f"{label:<34} {torch_s * 1000:7.1f} ms  (median of {REPEATS})")  # noqa: T201
        launch_root = root / "launch"
        make_launch_project(launch_root)
        dry = [str(BIN / "slurm-launch"), "train", "--args", "exp.yaml", "--dry-run"]
        report("slurm-launch --dry-run", median_wall(dry, launch_root, dict(os.environ)), torch_s)
        with cluster() as conf:
            if conf is None or shutil.which("squeue") is None:
                print("slurm-status not measured: no cluster or no squeue on PATH")  # noqa: T201
                return 0
            env = {**os.environ, "SLURM_CONF": conf}
            status_root = root / "status"
            status_root.mkdir()
            make_project(status_root)
            status_s = median_wall([str(BIN / "slurm-status"), "--all"], status_root, env)
            report(f"slurm-status --all, {RUNS} records", status_s, torch_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
