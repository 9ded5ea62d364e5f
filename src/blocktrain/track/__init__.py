"""MLflow tracking of an entry function's call: ``@track``, :func:`current`, :func:`log_metrics`.

- :mod:`~blocktrain.track.run`: the run of one call (open or resume, params, tags, close);
- :mod:`~blocktrain.track.writer`: the background writer that never blocks training;
- :mod:`~blocktrain.track.backend`: the MLflow client behind the writer;
- :mod:`~blocktrain.track.capture`, :mod:`~blocktrain.track.gitstate`,
  :mod:`~blocktrain.track.sysinfo`: captured stdout/stderr, git state, machine facts.

Must not: import mlflow at module level (the CLIs import this package), import torch, or know
about Slurm commands; the job's identity comes from :mod:`blocktrain.core.jobenv`.
"""

from blocktrain.track.run import (
    ATTEMPT_TAG,
    TrackConfig,
    Tracker,
    current,
    log_metrics,
    param_strings,
    track,
    tracking,
)

__all__ = [
    "ATTEMPT_TAG",
    "TrackConfig",
    "Tracker",
    "current",
    "log_metrics",
    "param_strings",
    "track",
    "tracking",
]
