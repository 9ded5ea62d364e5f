"""The watcher job: a small job after each launched job (``afterany``) that runs
:mod:`.finalize` on its runs, submitted with the job.

Apart from :mod:`.finalize` so that a launch imports neither it nor what it reads with
(MLflow replay, attempt history, sweeps' parent runs).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from blocktrain.launch.slurm import commands

WATCHER_NAME = "blocktrain-finalize"


def watcher_command(python: str, root: Path, run_ids: Sequence[str]) -> list[str]:
    """The command of the watcher job."""
    return [python, "-m", "blocktrain.launch.slurm.finalize", str(root), *run_ids]


def sbatch_watcher(job_id: str, python: str, root: Path, run_ids: Sequence[str], log: Path) -> str:
    """Submit the watcher for ``job_id`` (a whole array when it is one); returns its job id."""
    base_job = job_id.split("_", 1)[0]
    out = commands.run([
        "sbatch", "--parsable", f"--job-name={WATCHER_NAME}", f"--dependency=afterany:{base_job}",
        "--kill-on-invalid-dep=yes", "--ntasks=1", "--cpus-per-task=1", "--mem=512M", "--time=10",
        f"--output={log}", "--wrap", shlex.join(watcher_command(python, root, run_ids)),
    ])  # fmt: skip
    return out.strip().split(";", 1)[0]
