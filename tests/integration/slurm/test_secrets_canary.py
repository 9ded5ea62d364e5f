"""A secret from ``blocktrain secrets`` reaches a real job, and nothing the job leaves holds it.

One job on the local cluster: the launcher's environment is loaded the way ``.envrc`` loads it
(``eval "$(blocktrain secrets env)"`` in a shell that then runs ``slurm-launch``), Slack
messages go to a real webhook server, and the job prints the canary. Afterwards the canary's
value must be absent from every file of the project (``.blocktrain/`` with the batch scripts,
submitit's pickled job files, run records and captured logs; the MLflow database and its
artifacts) and from every Slack payload, while the job's own evidence shows that it had it.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launch_project import LaunchProject

from slurm_service import SlurmCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from webhook_server import WebhookServer

pytestmark = pytest.mark.integration
CANARY_NAME = "LAUNCH_TEST_CANARY"  # not a credential-like name: masking relies on the list


@pytest.fixture
def project(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[LaunchProject]:
    made = LaunchProject.create(tmp_path / "project", slurm_cluster.env)
    made.env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # the key file, outside the project
    made.env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"  # a headless node
    yield made
    jobs = made.command("squeue", "-h", "-o", "%A").stdout.split()
    if jobs:
        made.command("scancel", *jobs)
        made.wait(lambda: not made.command("squeue", "-h").stdout.strip(), 60, "an empty queue")


def holders(root: Path, needle: bytes) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


def test_canary_secret_reaches_the_job_and_no_record_of_it(project: LaunchProject) -> None:
    canary = "canary-" + secrets.token_hex(16)
    assert project.command("blocktrain", "secrets", "init").returncode == 0
    done = subprocess.run(
        ["blocktrain", "secrets", "set", CANARY_NAME], cwd=project.root, env=project.env,
        input=canary, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (project.root / "exp.yaml").write_text("steps: 20\nstep_seconds: 0.0\n")
    with WebhookServer() as hook:
        project.env["BLOCKTRAIN_SLACK_WEBHOOK_URL"] = hook.url
        launched = project.command(
            "bash", "-c", 'eval "$(blocktrain secrets env)" && exec slurm-launch train --args exp.yaml'
        )  # fmt: skip
        assert launched.returncode == 0, launched.stderr
        run_id, job_id = launched.stdout.split()[1], launched.stdout.split()[3]
        project.wait(lambda: project.run_status(run_id) == "FINISHED", 240, "the run to finish")
        project.wait(
            lambda: any("finished after" in b["text"] for b in hook.bodies), 60, "the end message"
        )
        # The watcher job runs after the job leaves the queue; its log is part of the record.
        project.wait(lambda: not project.command("squeue", "-h").stdout.strip(), 120, "no jobs")
        payloads = [r.raw for r in hook.received]
    assert project.job_state(job_id) == "COMPLETED"

    # The job had the value: each rank hashed it, and printed it (masked in the captured log).
    digest = hashlib.sha256(canary.encode()).hexdigest()
    run_dir = project.root / ".blocktrain" / "runs" / run_id
    for rank in (0, 1):
        assert (run_dir / f"canary-rank-{rank}.sha256").read_text() == digest
        assert "canary ***\n" in project.log(run_id, 1, rank=rank)

    # The places the scan below must cover do exist.
    state = project.root / ".blocktrain"
    assert list(state.rglob("*_submitted.pkl")), "submitit's pickled job"
    assert list(state.rglob("*.sh")), "the batch script"
    assert (state / "runs" / run_id / "run.json").exists()
    assert (project.root / "mlflow.db").exists()
    assert list((project.root / "mlartifacts").rglob("rank-0.out")), "the uploaded captured log"
    assert len(payloads) >= 2  # start and end

    needle = canary.encode()
    assert holders(project.root, needle) == []
    assert [p for p in payloads if needle in p] == []
