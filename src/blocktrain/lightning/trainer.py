"""``L.Trainer`` and ``L.Fabric`` set up for blocktrain, and the settings it refuses.

:func:`trainer` takes ``L.Trainer``'s keyword arguments and adds what a launched job needs:
the job's ranks (:class:`~blocktrain.lightning.plugins.BlocktrainEnvironment`, with ``devices``
and ``num_nodes`` from the job), DDP when there is more than one rank, durable checkpoint files,
:class:`~blocktrain.lightning.callback.Restartable` and
:class:`~blocktrain.lightning.logger.BlocktrainLogger`. :func:`fabric` does the same for
``L.Fabric``. A setting blocktrain cannot make restartable is refused with one line that
names the fix (:func:`refusal`), before anything trains.

Must not: train, or read checkpoints (the callback and ``trainer.fit`` do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.plugins.environments.cluster_environment import ClusterEnvironment
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy

from blocktrain import distributed
from blocktrain.core import checkpointfiles
from blocktrain.errors import BlocktrainError
from blocktrain.lightning.callback import Restartable
from blocktrain.lightning.logger import BlocktrainLogger
from blocktrain.lightning.plugins import BlocktrainEnvironment, DurableCheckpointIO, layout
from blocktrain.train.checkpoint.saver import default_folder

# Strategies whose processes blocktrain starts (one per task) and whose checkpoints one file
# holds. The others spawn their own processes or shard the checkpoint.
_STRATEGIES = {"auto", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false"}


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)  # pyright: ignore[reportUnknownArgumentType]
    return [value]


def refusal(settings: Mapping[str, Any], nodes: int = 1, per_node: int = 1) -> str | None:
    """Why blocktrain cannot make a Trainer or Fabric with ``settings`` restartable, with the
    fix, or None. ``nodes`` and ``per_node``: the job's layout."""
    strategy = settings.get("strategy")
    if isinstance(strategy, str) and strategy not in _STRATEGIES:
        return (
            f"strategy={strategy!r} cannot be requeued by blocktrain (it starts its own processes "
            "or shards its checkpoints): use strategy='ddp' or leave it out"
        )
    if isinstance(strategy, Strategy) and not isinstance(
        strategy, DDPStrategy | SingleDeviceStrategy
    ):
        return (
            f"strategy={type(strategy).__name__} cannot be requeued by blocktrain: use "
            "strategy='ddp' or leave it out"
        )
    for plugin in _as_list(settings.get("plugins")):
        if isinstance(plugin, ClusterEnvironment | CheckpointIO):
            return (
                f"plugins={type(plugin).__name__}: blocktrain provides the cluster environment "
                "and the checkpoint files (its own requeue, atomic files); leave it out"
            )
    for logger in _as_list(settings.get("logger", settings.get("loggers"))):
        if isinstance(logger, MLFlowLogger):
            return (
                "MLFlowLogger opens a new MLflow run in every attempt: leave it out, "
                "blocktrain.lightning logs into the run of the entry function"
            )
    if settings.get("enable_checkpointing") is False or settings.get("barebones") is True:
        return (
            "enable_checkpointing=False (or barebones=True) leaves nothing to resume from after "
            "a requeue: leave it out"
        )
    for name, expected in (("devices", per_node), ("num_nodes", nodes)):
        value = settings.get(name)
        if value not in (None, "auto", expected):
            return (
                f"{name}={value!r}, but the job has {nodes} node(s) of {per_node} task(s): leave "
                f"{name} out and set nodes and tasks_per_node in the profile"
            )
    return None


def _check(settings: Mapping[str, Any]) -> tuple[int, int]:
    nodes, per_node = layout()
    problem = refusal(settings, nodes, per_node)
    if problem is not None:
        raise BlocktrainError(problem)
    return nodes, per_node


def _strategy(settings: Mapping[str, Any], world: int) -> object:
    strategy = settings.get("strategy")
    if strategy in (None, "auto"):
        return "ddp" if world > 1 else "auto"
    return strategy


def trainer(
    *,
    every_steps: int | None = None,
    every_minutes: float | None = None,
    keep_last: int = 2,
    **settings: Any,  # noqa: ANN401 - L.Trainer's arguments
) -> L.Trainer:
    """An ``L.Trainer`` (``settings`` are its keyword arguments) under blocktrain's restarts.

    Args:
        every_steps: checkpoint every so many optimizer steps (besides the stop signal and the
            end of training)
        every_minutes: checkpoint every so many minutes
        keep_last: checkpoints kept in the run's folder
        settings: ``L.Trainer``'s arguments; the refused ones raise ``BlocktrainError``
    """
    nodes, per_node = _check(settings)
    _, world = distributed.rank_and_world()
    callbacks = [
        *_as_list(settings.get("callbacks")),
        Restartable(every_steps=every_steps, every_minutes=every_minutes, keep_last=keep_last),
    ]
    loggers = settings.get("logger", True)
    if loggers is True or loggers is None:
        loggers = [BlocktrainLogger()]
    elif loggers is not False:
        loggers = [*_as_list(loggers), BlocktrainLogger()]
    folder = default_folder()
    kwargs: dict[str, Any] = {
        "accelerator": "auto",
        "default_root_dir": str(folder.parent / "lightning"),
        **settings,
        "devices": per_node,
        "num_nodes": nodes,
        "strategy": _strategy(settings, world),
        "plugins": [
            *_as_list(settings.get("plugins")),
            BlocktrainEnvironment(),
            DurableCheckpointIO(),
        ],
        "callbacks": callbacks,
        "logger": loggers,
    }
    return L.Trainer(**kwargs)


def fabric(**settings: Any) -> L.Fabric:  # noqa: ANN401 - L.Fabric's arguments
    """An ``L.Fabric`` (``settings`` are its keyword arguments), launched on the job's ranks,
    with durable checkpoint files; a Fabric loop polls and saves through
    :class:`blocktrain.lightning.Restarts`."""
    nodes, per_node = _check(settings)
    _, world = distributed.rank_and_world()
    loggers = settings.get("loggers")
    kwargs: dict[str, Any] = {
        "accelerator": "auto",
        **settings,
        "devices": per_node,
        "num_nodes": nodes,
        "strategy": _strategy(settings, world),
        "plugins": [
            *_as_list(settings.get("plugins")),
            BlocktrainEnvironment(),
            DurableCheckpointIO(),
        ],
        "loggers": [*_as_list(loggers), BlocktrainLogger()],
    }
    made = L.Fabric(**kwargs)
    made.launch()  # the processes are the job's tasks: this joins them, it starts none
    return made


def resume_path(folder: Path | None = None) -> Path | None:
    """The run's newest good checkpoint (``ckpt_path`` for ``trainer.fit``), None at the first
    start. Call it on every rank: the run's folder is rank 0's answer."""
    return checkpointfiles.newest_good(folder if folder is not None else default_folder())
