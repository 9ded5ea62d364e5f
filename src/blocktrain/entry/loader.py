"""Finding an entry function by its ``package.module:function`` name.

Importing the module runs its top-level code (and whatever it imports); the launcher and the
worker both call this, the worker inside the job.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from blocktrain.errors import BlocktrainError

# The top-level modules of blocktrain's optional extras (pyproject.toml), by extra: an entry
# module that imports one where the extra is not installed is told how to install it.
EXTRA_MODULES = {"lightning": "lightning", "pytorch_lightning": "lightning", "optuna": "search"}


def missing_extra(error: ImportError) -> str:
    """`` (...: pip install 'blocktrain[EXTRA]')`` when ``error`` is a missing optional extra."""
    extra = EXTRA_MODULES.get((error.name or "").split(".")[0])
    if extra is None:
        return ""
    return f" (blocktrain's {extra!r} extra: pip install 'blocktrain[{extra}]')"


def load_entry(entry: str) -> Callable[..., Any]:
    """``package.module:function`` to the function."""
    module_name, _, name = entry.partition(":")
    if not module_name or not name:
        raise BlocktrainError(f"entry {entry!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BlocktrainError(
            f"cannot import {module_name!r} for entry {entry!r}: {exc}{missing_extra(exc)}"
        ) from None
    func = getattr(module, name, None)
    if not callable(func):
        raise BlocktrainError(f"{module_name} has no function {name!r}")
    return func
