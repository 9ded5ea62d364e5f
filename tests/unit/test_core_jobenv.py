"""One reader of rank and world size: every module that asks gets the same answer."""

from __future__ import annotations

import pytest

from blocktrain import distributed
from blocktrain.core.jobenv import Ranks, job_context, ranks

SETS: dict[str, tuple[dict[str, str], Ranks]] = {
    "plain process": ({}, Ranks(rank=0, local_rank=0, world_size=1)),
    "torchrun": (
        {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"},
        Ranks(rank=3, local_rank=1, world_size=4),
    ),
    "srun, job counts": (
        {"SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_NTASKS": "4"},
        Ranks(rank=2, local_rank=0, world_size=4),
    ),
    "srun, step counts only": (
        {"SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "4"},
        Ranks(rank=1, local_rank=1, world_size=4),
    ),
    "srun, both counts: the job's": (
        {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "4"},
        Ranks(rank=1, local_rank=0, world_size=2),
    ),
    "torch-style over Slurm's": (
        {"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"},
        Ranks(rank=0, local_rank=0, world_size=2),
    ),
    "torch-style without LOCAL_RANK under srun": (
        {"RANK": "3", "WORLD_SIZE": "4", "SLURM_LOCALID": "1", "SLURM_PROCID": "3"},
        Ranks(rank=3, local_rank=1, world_size=4),
    ),
    "Slurm batch script outside a step": (
        {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "4"},
        Ranks(rank=0, local_rank=0, world_size=1),
    ),
    "empty values": ({"RANK": "", "WORLD_SIZE": " "}, Ranks(rank=0, local_rank=0, world_size=1)),
    "srun, second of two nodes": (
        {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_NTASKS": "4"},
        Ranks(rank=3, local_rank=1, world_size=4, node_rank=1),
    ),
    "torchrun on the second node": (
        {"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "GROUP_RANK": "1"},
        Ranks(rank=2, local_rank=0, world_size=4, node_rank=1),
    ),
    "torch-style set by the worker under srun": (
        {"RANK": "2", "WORLD_SIZE": "4", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"},
        Ranks(rank=2, local_rank=0, world_size=4, node_rank=1),
    ),
}


@pytest.mark.parametrize("name", list(SETS))
def test_every_reader_agrees(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env, expected = SETS[name]
    assert ranks(env) == expected
    context = job_context(env, host="node1")
    assert (context.rank, context.local_rank, context.world_size, context.node_rank) == (
        expected.rank,
        expected.local_rank,
        expected.world_size,
        expected.node_rank,
    )
    rendezvous = distributed.rendezvous({**env, "SLURM_JOB_ID": "42"})
    assert (
        rendezvous.rank,
        rendezvous.local_rank,
        rendezvous.world_size,
        rendezvous.node_rank,
    ) == (expected.rank, expected.local_rank, expected.world_size, expected.node_rank)
    for variable in (
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS",
        "SLURM_STEP_NUM_TASKS", "SLURM_NODEID", "GROUP_RANK",
    ):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    # Without a process group, the runtime's view is the environment's.
    assert distributed.rank_and_world() == (expected.rank, expected.world_size)
    assert distributed.is_rank_zero() == (expected.rank == 0)


@pytest.mark.parametrize("variable", ["RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"])
def test_a_malformed_value_is_named(variable: str) -> None:
    env = {"SLURM_PROCID": "0", variable: "two"}
    with pytest.raises(ValueError, match=f"{variable}='two' is not an integer"):
        ranks(env)
