"""Lightning plugins that hand the processes and the checkpoint files to blocktrain.

- :class:`BlocktrainEnvironment`: the ranks are the job's tasks, started by ``slurm-launch``
  (or by hand) inside a process group that already exists. Lightning's own
  ``SLURMEnvironment`` would also take the job for its own (auto-requeue on SIGUSR1, its own
  ``scontrol requeue``), which is blocktrain's to do;
- :class:`DurableCheckpointIO`: every checkpoint Lightning or Fabric writes (``ModelCheckpoint``'s
  too) is written atomically with a SHA-256 checksum file beside it, as blocktrain's own are, and
  a file whose checksum does not match is refused on load rather than read half-written.

Must not: decide when to checkpoint or requeue (the callback and :mod:`blocktrain.restart` do).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.plugins.environments.cluster_environment import ClusterEnvironment
from typing_extensions import override

from blocktrain import distributed
from blocktrain.core import checkpointfiles
from blocktrain.core.jobenv import ranks
from blocktrain.errors import BlocktrainError
from blocktrain.train.checkpoint import files


def layout() -> tuple[int, int]:
    """(nodes, processes per node) of the ranks: every node runs as many (what Lightning's
    ``num_nodes`` and ``devices`` mean); one of each without a process group."""
    _, world = distributed.rank_and_world()
    if world == 1:
        return 1, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        # Started by torchrun, say: Lightning makes the group, and torchrun says the layout.
        count = world // ranks_per_node if (ranks_per_node := _local_world()) else 1
    else:
        nodes: list[object] = [None] * world
        dist.all_gather_object(nodes, ranks(os.environ).node_rank)
        count = len(set(nodes))
    if world % count:
        raise BlocktrainError(
            f"{world} ranks on {count} nodes, not as many on each: Lightning needs the same number"
            " of tasks on every node (set tasks_per_node in the profile)"
        )
    return count, world // count


def _local_world() -> int:
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() else 0


class BlocktrainEnvironment(ClusterEnvironment):
    """The job's ranks as blocktrain's worker set them up: processes started outside Lightning."""

    @property
    @override
    def creates_processes_externally(self) -> bool:
        return True

    @property
    @override
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    @override
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", "29500"))

    @staticmethod
    @override
    def detect() -> bool:
        return True

    @override
    def world_size(self) -> int:
        return distributed.rank_and_world()[1]

    @override
    def set_world_size(self, size: int) -> None:
        pass  # the job decides it, not Lightning

    @override
    def global_rank(self) -> int:
        return distributed.rank_and_world()[0]

    @override
    def set_global_rank(self, rank: int) -> None:
        pass  # the job decides it, not Lightning

    @override
    def local_rank(self) -> int:
        return ranks(os.environ).local_rank

    @override
    def node_rank(self) -> int:
        return ranks(os.environ).node_rank

    @override
    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        world = self.world_size()
        if num_devices * num_nodes != world:
            raise BlocktrainError(
                f"Lightning was given devices={num_devices} and num_nodes={num_nodes} for a job of"
                f" {world} ranks: leave both out (blocktrain.lightning.trainer sets them), and set"
                " nodes and tasks_per_node in the profile"
            )


class DurableCheckpointIO(CheckpointIO):
    """Atomic, checksummed checkpoint files; a torn or tampered file is refused on load."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        files.save_as(checkpoint, Path(path))

    @override
    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Any = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # The run's own files, vouched for by their checksums: Lightning's hold its loops'
        # state and hyperparameters, which torch's safe unpickler refuses.
        problem = checkpointfiles.problem(Path(path))
        if problem is not None:
            raise BlocktrainError(f"checkpoint {path} {problem}; resume from resume_path() instead")
        import torch

        state = torch.load(path, map_location=map_location, weights_only=bool(weights_only))
        return cast(dict[str, Any], state)

    @override
    def remove_checkpoint(self, path: str | os.PathLike[str]) -> None:
        Path(path).unlink(missing_ok=True)
        checkpointfiles.sidecar_path(Path(path)).unlink(missing_ok=True)
