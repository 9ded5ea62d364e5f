"""Fixtures shared by the whole suite: real local services on private ports, and the check
that the tests leave the repository clean."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import repo_status
from mlflow_service import MlflowServer
from slurm_service import SlurmCluster, start_cluster, stop_cluster

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def repository_left_clean() -> Iterator[None]:
    """Fail the session when its tests leave new files or changes in the repository.

    Being the first session fixture, it is torn down last, after the services' own clean-up.
    Files that .gitignore names (caches, .venv) do not count; a test writes under tmp_path.
    """
    before = repo_status.status(ROOT)
    yield
    if before is None:  # not a git checkout: nothing to compare with
        return
    left = repo_status.left_behind(before, repo_status.status(ROOT) or frozenset())
    if left:
        pytest.fail(
            "the tests left these in the repository (git status --porcelain); write them "
            "under tmp_path instead (files edited by hand during the run show here too):\n"
            + "\n".join(left),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One MLflow tracking server (SQLite backend, served artifacts) for the test session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.up()
    yield server
    server.down(purge=True)


@pytest.fixture
def own_mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A server of the test's own, which the test may stop and restart."""
    server = MlflowServer(tmp_path / "mlflow-server")
    yield server
    server.down(purge=True)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One local Slurm cluster with accounting (tests/slurm_service.py) for the session."""
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
