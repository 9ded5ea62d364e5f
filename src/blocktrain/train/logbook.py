"""Metrics for the MLflow run, handed to the tracker in bursts rather than one by one.

The tracker's background writer sends whatever is queued in one request, and every request
costs the process CPU time (with the embedded SQLite store, tens of milliseconds of Python
under the GIL). Logging every step of a fast training one request at a time would slow the
training down by several percent; queueing the points every few seconds, all at once, lets
the writer send them in one request.

Must not: send anything itself (the tracker's writer does), or import mlflow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blocktrain.track import Tracker


class Logbook:
    """Buffers ``(metrics, step)`` points for ``tracker``; a no-op without one."""

    def __init__(self, tracker: Tracker | None, every_s: float) -> None:
        self._tracker = tracker
        self._every_s = every_s
        self._points: list[tuple[dict[str, float], int]] = []
        self._last = time.monotonic()

    def log(self, metrics: Mapping[str, float], step: int, *, now: bool = False) -> None:
        """Keep a point; queue everything kept when ``now`` or when the interval has passed."""
        if self._tracker is None:
            return
        self._points.append((dict(metrics), step))
        if now or time.monotonic() - self._last >= self._every_s:
            self.flush()

    def flush(self) -> None:
        """Queue every kept point for the tracker's writer."""
        if self._tracker is not None:
            for metrics, step in self._points:
                self._tracker.log_metrics(metrics, step=step)
        self._points.clear()
        self._last = time.monotonic()
