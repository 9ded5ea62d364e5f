"""What a training keeps in every checkpoint to rebuild its network later, typed.

An entry function describes it as a dataclass (the dataset and network settings, the class
names, the input normalization, ...), hands it to the trainer as ``Trainer(args=
record_args(kept))``, and gets it back as that dataclass from any checkpoint of the run, or of
a registered model version, with ``recorded_args(path, Kept)``: ``evaluate`` and ``predict``
then need nothing but the checkpoint. The values are checked against the dataclass's
annotations as an ``--args`` file is (:mod:`blocktrain.entry.argtypes`).

Must not: write checkpoints (the trainer does) or import torch at module level.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, TypeVar, cast

from blocktrain.core.values import to_jsonable
from blocktrain.entry.argtypes import Mismatch, coerce
from blocktrain.errors import BlocktrainError
from blocktrain.train.checkpoint import files

if TYPE_CHECKING:
    from pathlib import Path

    from _typeshed import DataclassInstance

    from blocktrain.core.values import JSON

T = TypeVar("T")


def record_args(values: DataclassInstance) -> dict[str, JSON]:
    """``values`` (a dataclass instance) as the mapping that ``Trainer(args=...)`` keeps:
    nested dataclasses as mappings, tuples and sets as lists, enums by name, paths as text."""
    if not dataclasses.is_dataclass(values) or isinstance(values, type):
        raise BlocktrainError(f"record_args takes a dataclass instance, not {values!r}")
    return cast("dict[str, JSON]", to_jsonable(values))


def recorded_args(checkpoint_path: Path, kind: type[T]) -> T:
    """The arguments a checkpoint keeps (:func:`record_args`), as the dataclass ``kind``.

    Each value is checked against its annotation and converted back (lists to tuples, names
    to enums, ...). Raises :class:`~blocktrain.errors.BlocktrainError` naming the checkpoint
    and the field when they do not fit ``kind`` (a checkpoint of another project or version).
    """
    kept: object = files.load(checkpoint_path).get("args")
    try:
        return cast("T", coerce(kept, kind))
    except Mismatch as exc:
        where = ".".join(exc.path) or "args"
        raise BlocktrainError(
            f"the arguments kept in {checkpoint_path} are no {kind.__name__}: {where}: "
            f"{exc.message}"
        ) from None
