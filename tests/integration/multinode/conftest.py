"""One local Slurm cluster of three nodes for the multi-node tests, each node a network
namespace of its own (scripts/local-slurm up --nodes 3), and the launcher tests' throw-away
project (tests/integration/slurm/launch_project.py).

The nodes reach this machine only at the bridge's address: the projects track into MLflow's
embedded SQLite store on the shared file system (the project folder), and the S3 server, which
listens on 127.0.0.1, is reached through a relay on the bridge's address (bridge_relay.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

for helpers in ("slurm", "s3"):  # launch_project.py, s3_service.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / helpers))

from launch_project import LaunchProject  # pyright: ignore[reportMissingImports]  # noqa: E402

from slurm_service import SlurmCluster, start_cluster, stop_cluster  # noqa: E402

NODES = 3
CPUS_PER_NODE = 4  # one node holds a 4-task job; the nodes share the machine's cores


@pytest.fixture(scope="session")
def multinode_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("slurm-nodes"), nodes=NODES, cpus=CPUS_PER_NODE)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def project(tmp_path: Path, multinode_cluster: SlurmCluster) -> Iterator[LaunchProject]:
    made = LaunchProject.create(tmp_path / "project", multinode_cluster.env)
    yield made
    # Leave the shared cluster empty, and every node in service, for the next test.
    jobs = made.command("squeue", "-h", "-o", "%A").stdout.split()
    if jobs:
        made.command("scancel", *jobs)
        made.wait(lambda: not made.command("squeue", "-h").stdout.strip(), 60, "an empty queue")
    multinode_cluster.script("up")
