"""The two-level dataset cache across the nodes of one job: the persistent level, on the shared
file system, is filled once for the whole job; the node-local level ($SLURM_TMPDIR, each
node's own scratch) once on each node."""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_relay import relay
from s3_service import S3Server  # pyright: ignore[reportMissingImports]

import commands
from slurm_service import SlurmCluster

pytestmark = pytest.mark.integration
WORKER = Path(__file__).with_name("cache_worker.py")
SOURCE = "s3://datasets/nodes/shards"


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path / "s3-server")
    server.up()
    yield server
    server.kill()
    server.down(purge=True)


def controller_address(cluster: SlurmCluster) -> str:
    """This machine's address on the nodes' bridge: where slurmctld listens for them."""
    config = cluster.run("scontrol", "show", "config").stdout
    match = re.search(
        r"^SlurmctldHost\[0\]\s*=\s*\S+\((\d+\.\d+\.\d+\.\d+)\)", config, re.MULTILINE
    )
    assert match is not None, config
    return match.group(1)


def test_persistent_level_once_per_job_node_level_once_per_node(
    multinode_cluster: SlurmCluster, own_s3: S3Server, tmp_path: Path
):
    shards = {f"shard-{i}.bin": os.urandom(64 * 1024 + i) for i in range(5)}
    (tmp_path / "shards").mkdir()
    for name, data in shards.items():
        (tmp_path / "shards" / name).write_bytes(data)
    own_s3.storage().upload(tmp_path / "shards", SOURCE)
    shared = tmp_path / "shared-cache"
    port = int(own_s3.env["S3_ENDPOINT_URL"].rsplit(":", 1)[1])
    with relay(controller_address(multinode_cluster), port) as bridge:
        env = {
            **multinode_cluster.env,
            **own_s3.env,
            "S3_ENDPOINT_URL": f"http://{bridge.address}",
            "DATA_PATH": str(shared),
            "DATA_EPHEMERAL_PATH": "$SLURM_TMPDIR/data",  # each task's own, set on its node
        }
        out = tmp_path / "job.out"
        commands.run(
            ("sbatch", "--wait", "--nodes=3", "--ntasks-per-node=2", "--mem=1G", f"--output={out}",
             "--wrap", f"srun {sys.executable} {WORKER} {SOURCE}"),
            env=env, cwd=tmp_path, timeout=240,
        )  # fmt: skip
    text = out.read_text()
    results = [json.loads(line[7:]) for line in text.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 6, text
    assert Counter(r["node"] for r in results) == {"node1": 2, "node2": 2, "node3": 2}
    assert sum(r["gets"] for r in results) == len(shards)  # one download, for the whole job
    assert sum(r["persistent_fills"] for r in results) == 1
    node_fills = Counter[str]()
    for result in results:
        node_fills[result["node"]] += result["ephemeral_fills"]
    assert node_fills == {"node1": 1, "node2": 1, "node3": 1}
    scratch = multinode_cluster.state_dir / "nodes"
    for result in results:
        path = Path(result["path"])
        assert path.is_relative_to(scratch / result["node"] / "tmp"), path
        assert {p.name: p.read_bytes() for p in path.iterdir()} == shards
    assert {p.name: p.read_bytes() for p in (shared / Path(results[0]["path"]).name).iterdir()} == (
        shards
    )
