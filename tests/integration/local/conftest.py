"""The launcher tests' throw-away project (tests/integration/slurm/launch_project.py), here run
without Slurm: PATH holds the toolkit's commands and git, and no sbatch."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slurm"))

from launch_project import BIN, LaunchProject  # pyright: ignore[reportMissingImports]


class LocalProject(LaunchProject):
    """A :class:`LaunchProject` whose diagnostics come from local jobs' files, not squeue."""

    def diagnostics(self) -> str:
        state = self.root / ".blocktrain"
        files = sorted(state.rglob("*_supervisor.log")) + sorted(state.rglob("*_log.err"))[-4:]
        files += sorted((state / "local-jobs").glob("*.json"))
        return "\n".join(f"--- {path.name}\n" + path.read_text()[-2000:] for path in files)

    def local_job(self, job_id: str) -> dict[str, Any]:
        """The job's state file (.blocktrain/local-jobs/<job>.json)."""
        path = self.root / ".blocktrain" / "local-jobs" / f"{job_id.split('_', maxsplit=1)[0]}.json"
        return json.loads(path.read_text())


@pytest.fixture
def project(tmp_path: Path) -> Iterator[LocalProject]:
    tools = tmp_path / "tools"
    tools.mkdir()
    git = shutil.which("git")
    assert git is not None
    (tools / "git").symlink_to(git)
    env = {**os.environ, "PATH": str(tools)}
    made = LocalProject.create(tmp_path / "project", env)
    assert shutil.which("sbatch", path=made.env["PATH"]) is None
    assert made.env["PATH"].split(os.pathsep)[0] == str(BIN)
    yield made
    # No supervisor outlives its test: cancel what still runs.
    for path in (made.root / ".blocktrain" / "local-jobs").glob("L*.json"):
        elements = json.loads(path.read_text())["elements"]
        if any(e["state"] in ("PENDING", "RUNNING", "REQUEUED") for e in elements):
            made.command("slurm-cancel", path.stem)
