"""Deprecated: this module moved to :mod:`blocktrain.core.values`; import from there."""

import warnings

from blocktrain.core.values import *  # noqa: F403
from blocktrain.core.values import JSON

warnings.warn(
    "blocktrain.values is deprecated; import from blocktrain.core.values",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["JSON"]
