"""Finding an entry function by its ``package.module:function`` name.

Importing the module runs its top-level code (and whatever it imports); the launcher and the
worker both call this, the worker inside the job.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from blocktrain.errors import BlocktrainError


def load_entry(entry: str) -> Callable[..., Any]:
    """``package.module:function`` to the function."""
    module_name, _, name = entry.partition(":")
    if not module_name or not name:
        raise BlocktrainError(f"entry {entry!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BlocktrainError(f"cannot import {module_name!r} for entry {entry!r}: {exc}") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise BlocktrainError(f"{module_name} has no function {name!r}")
    return func
