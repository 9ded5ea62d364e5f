"""How long ``slurm-status --all`` takes with 100 run records, beside ``import torch``.

    export BLOCKTRAIN_BENCH_SLURM_CONF=.blocktrain/slurm/etc/slurm.conf
    .venv/bin/python benchmarks/bench_status.py

The records are synthetic (jobs the cluster does not know), half of them finished by their own
status.json, so one refresh runs one squeue (for the other half) and one sacct (for all). It
prints the median wall time of 5 runs of each command and their ratio; it asserts nothing.
Without BLOCKTRAIN_BENCH_SLURM_CONF, or without squeue on PATH, it says why and measures nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 100
REPEATS = 5
JOB_BASE = 9_000_000  # far above the ids a test cluster hands out
BIN = Path(sys.executable).parent


def make_project(root: Path) -> None:
    (root / "pyproject.toml").write_text('[tool.blocktrain]\nentry-module = "blocktrain.demo"\n')
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
        "entry": "blocktrain.demo:train",
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


def main() -> int:
    conf = os.environ.get("BLOCKTRAIN_BENCH_SLURM_CONF")
    if not conf or shutil.which("squeue") is None:
        print(  # noqa: T201
            "skipped: set BLOCKTRAIN_BENCH_SLURM_CONF to a running cluster's slurm.conf "
            "(scripts/local-slurm up; see scripts/local-slurm env) with squeue on PATH"
        )
        return 0
    env = {**os.environ, "SLURM_CONF": str(Path(conf).resolve())}
    with tempfile.TemporaryDirectory(prefix="bench-status-") as folder:
        root = Path(folder)
        make_project(root)
        status_s = median_wall([str(BIN / "slurm-status"), "--all"], root, env)
        torch_s = median_wall([sys.executable, "-c", "import torch"], root, env)
    print(f"slurm-status --all, {RUNS} records: {status_s * 1000:7.1f} ms (median of {REPEATS})")  # noqa: T201
    print(f"python -c 'import torch':       {torch_s * 1000:7.1f} ms (median of {REPEATS})")  # noqa: T201
    print(f"ratio status / import torch:    {status_s / torch_s:7.3f}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
