"""The lab of the dashboard tests: a small project (its entry module dashboard_entry.py) that
launches a sweep of two trainings with slurm-launch, tracked on an MLflow server; each training
registers its best model as a version of ``blobs``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BIN = Path(sys.executable).parent
MODEL = "blobs"
EXPERIMENT = "lab"
FINAL = ("FINISHED", "FAILED", "KILLED")
PYPROJECT = '[project]\nname = "lab"\nversion = "0"\n\n[tool.blocktrain]\nentry-module = "dashboard_entry"\n'


@dataclass(frozen=True)
class Lab:
    """The project, the server and the runs the sweep made."""

    root: Path
    env: dict[str, str]
    uri: str
    experiment_id: str
    parent_id: str
    run_ids: list[str]
    """The sweep's runs, in the order slurm-launch printed them."""

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def command(
        self, *argv: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command in the project, with ``env`` added to its environment."""
        return subprocess.run(
            [str(a) for a in argv], cwd=self.root, env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip


def make_project(root: Path, uri: str) -> dict[str, str]:
    """The lab's files, committed to git; returns the environment its commands run in."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    shutil.copy(HERE / "dashboard_entry.py", root / "dashboard_entry.py")
    (root / "slurm").mkdir()
    shutil.copy(REPO / "slurm" / "local.yaml", root / "slurm" / "local.yaml")
    (root / ".gitignore").write_text(".blocktrain/\n__pycache__/\n")
    (root / "base.yaml").write_text(f"steps: 24\nregister_as: {MODEL}\n")
    (root / "lr-sweep.yaml").write_text("base: [base.yaml]\ngrid:\n  lr: [0.05, 0.2]\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "BLOCKTRAIN_", "SLURM_"))
        and k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE"}
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        BLOCKTRAIN_SYSTEM_METRICS_INTERVAL_S="1",
    )
    git = ["git", "-c", "user.name=lab", "-c", "user.email=lab@example.org"]
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", "lab"]):
        subprocess.run(argv, cwd=root, env=env, check=True, capture_output=True)
    return env


def wait_until_ended(client: Any, run_ids: list[str], root: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        statuses = [client.get_run(r).info.status for r in run_ids]
        if all(s in FINAL for s in statuses):
            assert statuses == ["FINISHED"] * len(run_ids), diagnostics(root)
            return
        assert time.monotonic() < deadline, f"runs still {statuses}\n{diagnostics(root)}"
        time.sleep(1)


def diagnostics(root: Path) -> str:
    state = root / ".blocktrain"
    files = sorted(state.rglob("rank-0.err"))[-2:] + sorted(state.rglob("*_supervisor.log"))[-2:]
    return "\n".join(f"--- {path}\n{path.read_text()[-3000:]}" for path in files)


def cancel_local_jobs(root: Path, env: dict[str, str]) -> None:
    """No job outlives the tests: cancel the local jobs that still run."""
    for path in (root / ".blocktrain" / "local-jobs").glob("L*.json"):
        elements = json.loads(path.read_text())["elements"]
        if any(e["state"] in ("PENDING", "RUNNING", "REQUEUED") for e in elements):
            subprocess.run([str(BIN / "slurm-cancel"), path.stem], cwd=root, env=env,
                           capture_output=True, timeout=60, check=False)  # fmt: skip
