"""Fixtures shared by the whole suite: real local services on private ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_service import MlflowServer
from slurm_service import SlurmCluster, start_cluster, stop_cluster

ROOT = Path(__file__).resolve().parent.parent


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
