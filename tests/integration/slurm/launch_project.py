"""A throwaway research project for the launcher tests, and helpers to drive its commands."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BIN = Path(sys.executable).parent

PYPROJECT = """\
[project]
name = "launchtest"
version = "0"

[tool.blocktrain]
entry-module = "restartable"
"""


@dataclass
class LaunchProject:
    root: Path
    env: dict[str, str]

    @classmethod
    def create(cls, root: Path, cluster_env: dict[str, str]) -> LaunchProject:
        root.mkdir(parents=True)
        (root / "pyproject.toml").write_text(PYPROJECT)
        shutil.copy(HERE / "project" / "restartable.py", root / "restartable.py")
        (root / "slurm").mkdir()
        shutil.copy(REPO / "slurm" / "local.yaml", root / "slurm" / "local.yaml")
        env = {k: v for k, v in cluster_env.items() if not k.startswith(("MLFLOW_", "BLOCKTRAIN_"))}
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        return cls(root, env)

    def command(self, *argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in argv], cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def launch(self, *argv: str | Path) -> tuple[str, str]:
        """``slurm-launch`` that must succeed; returns (run id, job id) of a single run."""
        done = self.command("slurm-launch", *argv)
        assert done.returncode == 0, done.stderr
        words = done.stdout.split()
        return words[1], words[3]

    def runs(self) -> list[dict[str, str]]:
        """Every MLflow run of the embedded store: id, status."""
        db = self.root / "mlflow.db"
        if not db.exists():
            return []
        with sqlite3.connect(db) as connection:
            rows = connection.execute(
                "select run_uuid, status from runs where lifecycle_stage='active'"
            )
            return [{"run_id": r[0], "status": r[1]} for r in rows]

    def run_status(self, run_id: str) -> str:
        return next(r["status"] for r in self.runs() if r["run_id"] == run_id)

    def tags(self, run_id: str) -> dict[str, str]:
        with sqlite3.connect(self.root / "mlflow.db") as connection:
            rows = connection.execute("select key, value from tags where run_uuid=?", (run_id,))
            return dict(rows.fetchall())

    def params(self, run_id: str) -> dict[str, str]:
        with sqlite3.connect(self.root / "mlflow.db") as connection:
            rows = connection.execute("select key, value from params where run_uuid=?", (run_id,))
            return dict(rows.fetchall())

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        with sqlite3.connect(self.root / "mlflow.db") as connection:
            rows = connection.execute(
                "select step, value from metrics where run_uuid=? and key=? order by step, timestamp",
                (run_id, key),
            )
            return [(int(s), float(v)) for s, v in rows.fetchall()]

    def job_state(self, job_id: str) -> str:
        done = self.command("sacct", "-X", "-P", "-n", "-o", "JobID,State", "-j", job_id)
        for line in done.stdout.splitlines():
            got, _, state = line.partition("|")
            if got == job_id:
                return state.split(" ")[0]
        return "UNKNOWN"

    def queue_state(self, job_id: str) -> str | None:
        done = self.command("squeue", "-h", "-o", "%i|%T", "-j", job_id.split("_", maxsplit=1)[0])
        for line in done.stdout.splitlines():
            got, _, state = line.partition("|")
            if got == job_id:
                return state
        return None

    def wait(self, condition, timeout: float, what: str, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what}\n{self.diagnostics()}"
        )

    def status_file(self, run_id: str) -> dict[str, object]:
        path = self.root / ".blocktrain" / "logs" / run_id / "status.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def log(self, run_id: str, attempt: int, rank: int = 0, stream: str = "out") -> str:
        path = (
            self.root
            / ".blocktrain"
            / "logs"
            / run_id
            / f"attempt-{attempt}"
            / f"rank-{rank}.{stream}"
        )
        return path.read_text() if path.exists() else ""

    def diagnostics(self) -> str:
        logs = sorted((self.root / ".blocktrain").rglob("*_log.err"))[-4:]
        parts = [self.command("squeue").stdout]
        parts += [f"--- {path.name}\n" + path.read_text()[-2000:] for path in logs]
        return "\n".join(parts)
