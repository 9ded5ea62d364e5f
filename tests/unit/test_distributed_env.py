"""Rendezvous from torch-style and Slurm variables, and Slurm's host list syntax.

Expected host lists are what ``scontrol show hostnames`` prints for the same text. Real
process groups are exercised in tests/integration/test_distributed_gloo.py.
"""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from blocktrain.distributed import (
    Rendezvous,
    all_agree,
    barrier,
    expand_hostlist,
    is_rank_zero,
    process_group,
    rendezvous,
)

SLURM_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "8",
    "SLURM_JOB_NODELIST": "gpu[07-10],cpu1",
}


HOSTLISTS = [
    ("node01", ["node01"]),
    ("node[01-03]", ["node01", "node02", "node03"]),
    ("node[1-2]", ["node1", "node2"]),
    ("gpu[1,3-4],cpu7", ["gpu1", "gpu3", "gpu4", "cpu7"]),
    ("node[08-10]", ["node08", "node09", "node10"]),
    ("node[8-10]", ["node8", "node9", "node10"]),
    ("node[001-002,10]", ["node001", "node002", "node10"]),
    ("a,b[1-2],c", ["a", "b1", "b2", "c"]),
    ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
    ("node[7]", ["node7"]),
    ("node[1,3],node2", ["node1", "node3", "node2"]),
]


@pytest.mark.parametrize(("hostlist", "hosts"), [*HOSTLISTS, ("", [])])
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="Slurm's scontrol is not installed")
def test_expand_hostlist_agrees_with_scontrol(tmp_path: Path) -> None:
    """The same lists through Slurm's own parser (a minimal slurm.conf is all it reads)."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=hostlists\nSlurmctldHost=localhost\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for hostlist, hosts in HOSTLISTS:
        done = subprocess.run(
            ["scontrol", "show", "hostnames", hostlist],
            env=env, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert done.stdout.split() == hosts == expand_hostlist(hostlist), hostlist


@pytest.mark.parametrize("hostlist", ["node[1-2", "node1-2]", "node[3-1]", "node[]", "n[a-b]"])
def test_malformed_hostlist_is_rejected(hostlist: str) -> None:
    with pytest.raises(ValueError, match="Slurm hostlist"):
        expand_hostlist(hostlist)


def test_torch_variables_win() -> None:
    env = {
        **SLURM_TASK,
        "RANK": "3",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "head",
        "MASTER_PORT": "29400",
    }
    assert rendezvous(env) == Rendezvous(
        rank=3, local_rank=0, world_size=4, master_addr="head", master_port=29400
    )


def test_slurm_variables() -> None:
    assert rendezvous(SLURM_TASK) == Rendezvous(
        rank=5, local_rank=1, world_size=8, master_addr="gpu07", master_port=15000 + 4242
    )


def test_step_nodelist_comes_before_the_jobs() -> None:
    env = {**SLURM_TASK, "SLURM_STEP_NODELIST": "gpu[09-10]"}
    assert rendezvous(env).master_addr == "gpu09"


def test_port_is_the_same_for_every_task_and_wraps() -> None:
    ports = {rendezvous({**SLURM_TASK, "SLURM_PROCID": str(r)}).master_port for r in range(8)}
    assert ports == {19242}
    big = rendezvous({**SLURM_TASK, "SLURM_JOB_ID": "123456789"}).master_port
    assert big == 15000 + 123456789 % 20000
    assert 15000 <= big < 35000


def test_port_override() -> None:
    env = {**SLURM_TASK, "BLOCKTRAIN_MASTER_PORT": "23456"}
    assert rendezvous(env).master_port == 23456


def test_single_process_defaults() -> None:
    place = rendezvous({})
    assert (place.rank, place.local_rank, place.world_size) == (0, 0, 1)
    assert place.master_addr == "127.0.0.1"
    assert not place.is_distributed
    with socket.socket() as sock:  # the port was free a moment ago
        sock.bind(("127.0.0.1", place.master_port))


def test_several_processes_without_port_use_torchs_default() -> None:
    place = rendezvous({"RANK": "1", "WORLD_SIZE": "2"})
    assert (place.master_addr, place.master_port) == ("127.0.0.1", 29500)


def test_bad_number_names_the_variable() -> None:
    with pytest.raises(ValueError, match="SLURM_NTASKS='eight'"):
        rendezvous({**SLURM_TASK, "SLURM_NTASKS": "eight"})


def test_env_round_trips() -> None:
    place = rendezvous(SLURM_TASK)
    assert rendezvous(place.env()) == place


def test_importing_does_not_import_torch() -> None:
    code = (
        "import sys, blocktrain.distributed, blocktrain.train.checkpoint.files;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_single_process_group_exports_and_restores_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name in [name for name in os.environ if name.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    import torch.distributed as dist

    with process_group() as place:
        assert place.world_size == 1
        assert os.environ["WORLD_SIZE"] == "1"
        assert os.environ["MASTER_PORT"] == str(place.master_port)
        assert not dist.is_initialized()
        assert is_rank_zero()
        barrier()
        assert all_agree(True)
        assert not all_agree(False)
    assert "WORLD_SIZE" not in os.environ


EXIT_SCRIPT = """
import atexit, pathlib, sys
from blocktrain.distributed import exit_without_finalizing
atexit.register(lambda: pathlib.Path(sys.argv[1]).write_text("finalized"))
exit_without_finalizing()
exit_without_finalizing()  # once is enough, twice is harmless
sys.stdout.write("buffered, not yet flushed")
if sys.argv[2] == "raise":
    raise KeyError("an error ends the process")
"""


@pytest.mark.parametrize(("how", "status", "finalized"), [("return", 0, False), ("raise", 1, True)])
def test_exit_without_finalizing_skips_finalization_unless_an_exception_ends_it(
    tmp_path: Path, how: str, status: int, finalized: bool
) -> None:
    marker = tmp_path / "finalized"
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(marker), how],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status, done.stderr
    assert done.stdout == "buffered, not yet flushed"  # flushed before leaving
    assert marker.exists() == finalized  # earlier exit handlers ran only on the error
    assert ("KeyError" in done.stderr) == (how == "raise")
