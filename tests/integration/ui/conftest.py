"""A lab on an MLflow server of its own, as the dashboard tests see it: the sweep of
lab_project.py, launched with ``--executor local`` (no Slurm needed) and ended."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from lab_project import BIN, Lab, cancel_local_jobs, make_project, wait_until_ended

from mlflow_service import MlflowServer


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """The server whose UI the browser opens: nothing but the lab's runs on it."""
    server = MlflowServer(tmp_path_factory.mktemp("lab-mlflow"))
    server.up()
    yield server
    server.down(purge=True)


@pytest.fixture(scope="session")
def lab(lab_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The sweep, launched and ended."""
    root = tmp_path_factory.mktemp("lab") / "lab"
    env = make_project(root, lab_server.uri)
    launch = [BIN / "slurm-launch", "train", "--sweep", "lr-sweep.yaml", "--executor", "local",
              "--slurm", "tasks_per_node=1", "--slurm", "array_parallelism=2"]  # fmt: skip
    done = subprocess.run(
        [str(a) for a in launch], cwd=root, env=env, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    run_ids = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("run ")]
    assert len(run_ids) == 2, done.stdout
    client = lab_server.client()
    try:
        wait_until_ended(client, run_ids, root)
        parent_id = client.get_run(run_ids[0]).data.tags["mlflow.parentRunId"]
        wait_until_ended(client, [parent_id], root)
        experiment_id = str(client.get_run(parent_id).info.experiment_id)
        yield Lab(root, env, lab_server.uri, experiment_id, parent_id, run_ids)
    finally:
        cancel_local_jobs(root, env)
