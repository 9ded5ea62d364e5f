"""Deprecated: this module moved to :mod:`blocktrain.train.checkpoint`; import from there."""

import warnings

from blocktrain.train.checkpoint.files import *  # noqa: F403
from blocktrain.train.checkpoint.files import CheckpointConfig

warnings.warn(
    "blocktrain.checkpoint is deprecated; import from blocktrain.train.checkpoint",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["CheckpointConfig"]
