"""MLflow tracking of an entry function's call: ``@track``, :func:`current`, :func:`log_metrics`.

- :mod:`~blocktrain.track.run`: ``@track`` and :func:`tracking`, one attempt of a run in order;
- :mod:`~blocktrain.track.tracker`: :class:`TrackConfig` and the :class:`Tracker` handle that
  user code logs through (:func:`current`, :func:`log_metrics`, :func:`nest_under`);
- :mod:`~blocktrain.track.lifecycle`: opening or resuming the run (params checked, tags) and
  closing it;
- :mod:`~blocktrain.track.attemptlogs`: each attempt's captured logs, ``attempt.json``,
  ``status.json`` and their periodic upload;
- :mod:`~blocktrain.track.attempts`, :mod:`~blocktrain.track.attempthistory`: the run's
  attempts as rows (how each ended), their records on disk and the ``attempts.csv`` table;
- :mod:`~blocktrain.track.sysmetrics`: system metrics sampled while an attempt runs;
- :mod:`~blocktrain.track.sigterm`: SIGTERM as :class:`~blocktrain.errors.Terminated` outside
  launched jobs;
- :mod:`~blocktrain.track.replay`: records kept during an outage, sent at the next start or
  by ``python -m blocktrain.track replay``;
- :mod:`~blocktrain.track.writer`: the background writer that never blocks training;
- :mod:`~blocktrain.track.backend`: the MLflow client behind the writer;
- :mod:`~blocktrain.track.capture`, :mod:`~blocktrain.track.gitstate`,
  :mod:`~blocktrain.track.sysinfo`: captured stdout/stderr, git state, machine facts.

Must not: import mlflow at module level (the CLIs import this package), import torch, or know
about Slurm commands; the job's identity comes from :mod:`blocktrain.core.jobenv`.
"""

from blocktrain.track.backend import ATTEMPT_TAG
from blocktrain.track.run import track, tracking
from blocktrain.track.tracker import (
    TrackConfig,
    Tracker,
    current,
    log_metrics,
    nest_under,
    param_strings,
)

__all__ = [
    "ATTEMPT_TAG",
    "TrackConfig",
    "Tracker",
    "current",
    "log_metrics",
    "nest_under",
    "param_strings",
    "track",
    "tracking",
]
