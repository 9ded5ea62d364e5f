"""scripts/local-slurm's pure naming of a cluster of several nodes: interface and namespace
names Linux accepts, a private subnet that clashes with nothing, what the nodes resolve, and
the checks of `up`'s options. (The network itself: tests/integration/multinode.)"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local-slurm"


def load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("local_slurm", str(SCRIPT))
    spec = importlib.util.spec_from_loader("local_slurm", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_slurm"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


ls = load_script()


def cluster(state: Path, nodes: int, subnet: str = "10.200.7.0/24") -> Any:
    return ls.Cluster(
        state=state, run=state / "run", name="bt_x", db_name="bt_x_acct", db_password="p",
        mariadb_port=1, slurmdbd_port=2, slurmctld_port=3, slurmd_port=4, nodes=nodes,
        subnet=subnet,
    )  # fmt: skip


def test_names_fit_linux_limits_and_come_from_the_state_folder(tmp_path: Path) -> None:
    made = cluster(tmp_path / "a", ls.MAX_NODES)
    network = made.network
    names = [network.bridge, *(network.veth(node) for node in made.node_names)]
    assert all(len(name) <= 15 for name in names)  # IFNAMSIZ - 1
    assert len(set(names)) == len(names)
    assert network.namespace("node3").startswith(network.namespace_prefix)
    other = cluster(tmp_path / "b", 2).network
    assert other.bridge != network.bridge
    assert not other.namespace("node1").startswith(network.namespace_prefix)


def test_addresses_and_what_the_nodes_resolve(tmp_path: Path) -> None:
    made = cluster(tmp_path, 3)
    assert made.node_names == ["node1", "node2", "node3"]
    assert made.controller_addr == "10.200.7.1"
    assert str(made.network.address("node3")) == "10.200.7.4"
    hosts = ls.hosts_file(made, "login").splitlines()
    assert "10.200.7.1\tlogin" in hosts
    assert "10.200.7.2\tnode1" in hosts
    assert "127.0.0.1\tlocalhost" in hosts
    assert made.daemons == [
        "mariadb",
        "slurmdbd",
        "slurmctld",
        *(f"slurmd-node{i}" for i in (1, 2, 3)),
    ]
    lines = ls.node_lines(made, cpus=4, real_memory=1000).splitlines()
    assert lines[1] == (
        "NodeName=node2 NodeHostname=node2 NodeAddr=10.200.7.3 CPUs=4 RealMemory=1000 State=UNKNOWN"
    )


def test_one_node_is_this_machine_as_before(tmp_path: Path) -> None:
    made = cluster(tmp_path, 1, subnet="")
    assert made.controller_addr == "127.0.0.1"
    assert made.daemons == ["mariadb", "slurmdbd", "slurmctld", "slurmd"]
    assert len(made.node_names) == 1


def test_the_subnet_avoids_every_network_in_use() -> None:
    first = ls.choose_subnet("abc123", [])
    assert first.prefixlen == 24
    assert first.subnet_of(ls.SUBNETS)
    assert ls.choose_subnet("abc123", []) == first  # the same folder, the same subnet
    taken = [first, ipaddress.IPv4Network("10.0.0.0/8")]
    with pytest.raises(ls.LocalSlurmError, match="every /24"):
        ls.choose_subnet("abc123", taken)
    moved = ls.choose_subnet("abc123", [first])
    assert not moved.overlaps(first)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"nodes": 0}, "--nodes must be between 1 and 64, not 0"),
        ({"nodes": 65}, "--nodes must be between 1 and 64"),
        ({"cpus": 0}, "--cpus must be at least 1, not 0"),
        ({"port_base": 80}, "--port-base must be between 1024 and 65532"),
    ],
)
def test_bad_options_are_refused_before_anything_is_made(
    shape: dict[str, int], message: str
) -> None:
    with pytest.raises(ls.LocalSlurmError, match=message):
        ls.Shape(**shape).check()


def test_a_running_cluster_names_what_differs(tmp_path: Path) -> None:
    made = cluster(tmp_path, 3)
    assert ls.Shape().conflicts(made) is None
    assert ls.Shape(nodes=3).conflicts(made) is None
    assert ls.Shape(nodes=2).conflicts(made) == "with 3 nodes"
    assert ls.Shape(cpus=8).conflicts(made) == "with the machine's CPUs"
