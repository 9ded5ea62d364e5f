"""System metrics of an attempt: CPU, memory, disk, network and GPU use as ``system/...`` metrics
of the run, which the MLflow UI shows in its System Metrics tab.

The samples come from MLflow's own monitors (``mlflow.system_metrics.metrics``: the samplers
behind ``mlflow.system_metrics.SystemMetricsMonitor``, under the names it logs, such as
``system/cpu_utilization_percentage``), read on a thread of their own every
``BLOCKTRAIN_SYSTEM_METRICS_INTERVAL_S`` seconds (default 10; 0 turns them off): CPU use over
the interval, the rest as it is at the sample. The samples go to the run through the tracker's
writer, like every other record, several at a time when the interval is short. MLflow's own
monitor loop is not used: it logs through a client of its own, bypassing the writer's buffering
through outages (and, on the embedded SQLite store, adding a second writer to the database), and
it asks the server for the run's status at every sample and stops for good at the first request
that fails, so one network blip would end the attempt's samples.

Only global rank 0 samples: the run has one writer, there, and its host is the one the System
Metrics tab shows without a node prefix (MLflow names another node's samples
``system/<node>/...``). The samples of one attempt are identified by their steps: they continue
across attempts, each attempt starting after every step of the earlier ones, and its
``attempt.json`` (and the run's ``attempts.csv``) keep its first and last step.

Must not: sample on the training thread, or fail the job: without psutil, or without MLflow's
monitors, there are no samples and one warning says why; a GPU without NVML is left out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any, Protocol

from blocktrain.core import envvars
from blocktrain.track import attempthistory
from blocktrain.track.tracker import Tracker

PREFIX = "system/"
THREAD_NAME = "blocktrain-sysmetrics"
SEND_EVERY_S = 5.0
"""Samples go to the writer together at most this often (each with its own time), so that a
short interval does not cost a request per sample."""
_STOP_TIMEOUT_S = 5.0
_log = logging.getLogger("blocktrain.track")
Publish = Callable[[Mapping[str, float], int, int], None]
"""Called with a sample's values, its step and when it was taken (epoch milliseconds)."""


class Sampler(Protocol):
    """Reads the machine (``collect``) and returns the means since the last ``aggregate``."""

    def collect(self) -> None: ...
    def aggregate(self) -> dict[str, float]: ...


class MonitorSampler:
    """MLflow's monitors as one :class:`Sampler`."""

    def __init__(self, monitors: list[Any]) -> None:
        self._monitors = monitors

    @classmethod
    def from_mlflow(cls) -> MonitorSampler:
        """CPU and memory, disk and network, and the GPUs that NVML (or ROCm) can see."""
        from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
        from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
        from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

        monitors: list[Any] = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
        gpu = _gpu_monitor()
        if gpu is not None:
            monitors.append(gpu)
        return cls(monitors)

    def collect(self) -> None:
        for monitor in self._monitors:
            monitor.collect_metrics()

    def aggregate(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for monitor in self._monitors:
            values.update({str(k): float(v) for k, v in monitor.aggregate_metrics().items()})
            monitor.clear_metrics()
        return values


def _gpu_monitor() -> Any | None:  # noqa: ANN401 - an mlflow monitor, imported lazily
    """NVIDIA's through NVML, else AMD's through ROCm, else None (no GPU, or no driver)."""
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
    from mlflow.system_metrics.metrics.rocm_monitor import ROCMMonitor

    for kind in (GPUMonitor, ROCMMonitor):
        with contextlib.suppress(Exception):
            return kind()
    return None


def prefixed(values: Mapping[str, float]) -> dict[str, float]:
    """MLflow's names for the System Metrics tab: ``system/cpu_utilization_percentage``."""
    return {f"{PREFIX}{name}": value for name, value in values.items()}


class SystemMetrics:
    """The thread that samples every ``interval_s`` and publishes at consecutive steps from
    ``first_step``, every :data:`SEND_EVERY_S` at most; a last sample covers the time since the
    previous one when it stops. It also makes its sampler (``make``), so that not even loading
    the monitors (NVML's start-up takes a while) happens on the caller's thread."""

    def __init__(
        self, make: Callable[[], Sampler], publish: Publish, *, interval_s: float, first_step: int
    ) -> None:
        self._make = make
        self._publish = publish
        self._interval_s = interval_s
        self._step = first_step
        self._last_step: int | None = None
        self._held: list[tuple[dict[str, float], int, int]] = []
        self._sent_at = time.monotonic()
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int | None:
        """Stop after one last sample; returns the last step published (None: none was)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(_STOP_TIMEOUT_S)
        return self._last_step if not self._thread.is_alive() else None

    def _loop(self) -> None:
        try:
            sampler = self._make()
        except Exception as exc:  # noqa: BLE001 - e.g. psutil missing from the image
            name = envvars.SYSTEM_METRICS_INTERVAL_S.name
            _log.warning("no system metrics (%s); %s=0 turns them off", exc, name)
            return
        # The first CPU reading measures since the one before: take it now, and drop it.
        self._sample_quietly(sampler, publish=False)
        while not self._stop.wait(self._interval_s):
            self._sample_quietly(sampler, publish=True)
            if time.monotonic() - self._sent_at >= SEND_EVERY_S:
                self._send()
        self._sample_quietly(sampler, publish=True)
        self._send()

    def _send(self) -> None:
        for values, step, taken_ms in self._held:
            self._publish(values, step, taken_ms)
        self._held.clear()
        self._sent_at = time.monotonic()

    def _sample_quietly(self, sampler: Sampler, *, publish: bool) -> None:
        try:
            sampler.collect()
            values = sampler.aggregate()
        except Exception as exc:  # noqa: BLE001 - a sample is not worth the job
            if not self._warned:
                self._warned = True
                _log.warning("a system metrics sample failed (%s); trying again", exc)
            return
        if publish and values:
            self._held.append((prefixed(values), self._step, int(time.time() * 1000)))
            self._last_step = self._step
            self._step += 1


@contextlib.contextmanager
def sampled(
    tracker: Tracker, make: Callable[[], Sampler] = MonitorSampler.from_mlflow
) -> Generator[None]:
    """Sample the machine for the block, at the run's next steps (rank 0, with a writer)."""
    interval = tracker.config.system_metrics_interval_s
    if interval <= 0 or tracker.writer is None:
        yield
        return
    logs, number = tracker.logs, tracker.context.attempt
    first = _noted_first_step(tracker, interval)
    thread = SystemMetrics(make, tracker.log_side_metrics, interval_s=interval, first_step=first)
    thread.start()
    try:
        yield
    finally:
        last = thread.stop()
        if last is not None:
            with contextlib.suppress(OSError):
                attempthistory.note_system_steps(logs, number, {"last_step": last})


def _noted_first_step(tracker: Tracker, interval: float) -> int:
    logs, number = tracker.logs, tracker.context.attempt
    first = attempthistory.first_system_step(logs, number)
    with contextlib.suppress(OSError):
        steps = {"first_step": first, "interval_s": interval}
        attempthistory.note_system_steps(logs, number, steps)
    return first
