"""A Lightning logger that writes into the run of the entry function that is running.

``self.log`` values and ``save_hyperparameters`` go to blocktrain's tracker, so to its one
MLflow run: through the buffered writer (kept on disk while the server is away), with the
same step numbers in every attempt (a resumed attempt does not log a step the run holds).
Lightning's ``MLFlowLogger`` would open a run of its own in every attempt instead.

Hyperparameters become params under ``lightning.`` (``lightning.lr``): MLflow's params are
immutable, and the entry function's arguments are params of the run already under their own
names, which the module's hyperparameters often repeat with other types.

Must not: end the run (the entry function's tracking does, once it returns) or import mlflow.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Iterator, Mapping
from typing import Any, cast

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from blocktrain import track

PARAM_PREFIX = "lightning."


def _flat(values: Mapping[str, object], prefix: str) -> Iterator[tuple[str, object]]:
    for key, given in values.items():
        value = vars(given) if isinstance(given, Namespace) else given
        if isinstance(value, Mapping):
            yield from _flat(cast(Mapping[str, object], value), f"{prefix}{key}/")
        elif value is None or isinstance(value, bool | int | float | str):
            yield f"{prefix}{key}", value if value is not None else "None"
        else:
            yield f"{prefix}{key}", str(value)


def hyperparameter_params(params: Mapping[str, object] | Namespace) -> dict[str, object]:
    """Lightning's hyperparameters as the run's params: nested ones flattened (``net/hidden``),
    objects as their text, all named under ``lightning.``."""
    values = vars(params) if isinstance(params, Namespace) else params
    return dict(_flat(values, PARAM_PREFIX))


class BlocktrainLogger(Logger):
    """Lightning's metrics and hyperparameters into blocktrain's run (see module docstring)."""

    @property
    @override
    def name(self) -> str:
        return "blocktrain"

    @property
    @override
    def version(self) -> str | None:
        tracker = track.current()
        return tracker.run_id if tracker is not None else None

    @override
    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        track.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)

    @override
    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        tracker = track.current()
        if tracker is not None:
            tracker.log_params(hyperparameter_params(params))

    @override
    def finalize(self, status: str) -> None:
        pass  # the run stays open: a requeue or the entry function's return ends the attempt
