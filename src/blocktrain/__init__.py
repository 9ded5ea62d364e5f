"""blocktrain: an HPC batch toolkit for ML research on Slurm.

Importing the package stays light (no torch, no mlflow); those load when a run starts.
"""

from blocktrain.annotate import entrypoint
from blocktrain.errors import BlocktrainError, RequeueRequested
from blocktrain.track import current, log_metrics

__all__ = ["BlocktrainError", "RequeueRequested", "current", "entrypoint", "log_metrics"]
__version__ = "0.1.0"
