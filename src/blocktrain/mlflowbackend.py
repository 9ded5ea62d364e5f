"""Deprecated: ``project_root`` moved to :mod:`blocktrain.core.paths`, the rest to
:mod:`blocktrain.track.backend`; import from there."""

import warnings

from blocktrain.core.paths import project_root
from blocktrain.track.backend import *  # noqa: F403
from blocktrain.track.backend import tracking_uri

warnings.warn(
    "blocktrain.mlflowbackend is deprecated; import project_root from blocktrain.core.paths "
    "and the MLflow backend from blocktrain.track.backend",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["project_root", "tracking_uri"]
