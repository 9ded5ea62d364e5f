"""blocktrain: an HPC batch toolkit for ML research on Slurm.

Importing the package stays light (no torch, no mlflow); those load when a run starts. The
annotators are imported on first use, so the command-line tools, which live in this package
too, start without loading the tracker and the notifier.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from blocktrain.errors import BlocktrainError, RequeueRequested

if TYPE_CHECKING:
    from blocktrain.annotate import entrypoint
    from blocktrain.track import current, log_metrics

__all__ = ["BlocktrainError", "RequeueRequested", "current", "entrypoint", "log_metrics"]
__version__ = "0.1.0"

_LAZY = {
    "entrypoint": "blocktrain.annotate",
    "current": "blocktrain.track",
    "log_metrics": "blocktrain.track",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blocktrain' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
