"""System metrics: MLflow's monitors read this machine; the sampling thread's steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from blocktrain.track.sysmetrics import MonitorSampler, SystemMetrics, prefixed


def test_mlflow_monitors_read_this_machine_under_mlflow_names():
    sampler = MonitorSampler.from_mlflow()
    sampler.collect()
    sampler.collect()
    values = prefixed(sampler.aggregate())
    for name in (
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
        "system/system_memory_usage_percentage",
        "system/disk_usage_percentage",
        "system/network_receive_megabytes",
    ):
        assert name in values, sorted(values)
    assert values["system/system_memory_usage_megabytes"] > 0
    assert 0 <= values["system/cpu_utilization_percentage"] <= 100
    sampler.collect()
    assert sampler.aggregate().keys() == {k.removeprefix("system/") for k in values}


class Counting:
    """A sampler whose readings are 1, 2, 3, ...; its mean since the last aggregate."""

    def __init__(self) -> None:
        self.readings: list[float] = []
        self.count = 0
        self.thread: str | None = None

    def collect(self) -> None:
        self.thread = threading.current_thread().name
        self.count += 1
        self.readings.append(float(self.count))

    def aggregate(self) -> dict[str, float]:
        mean = sum(self.readings) / len(self.readings)
        self.readings.clear()
        return {"reading": mean}


def test_samples_go_out_at_consecutive_steps_together_and_once_more_at_the_end():
    sampler = Counting()
    published: list[tuple[dict[str, float], int, int]] = []

    def publish(values: Mapping[str, float], step: int, taken_ms: int) -> None:
        published.append((dict(values), step, taken_ms))

    started_ms = int(time.time() * 1000)
    sampling = SystemMetrics(lambda: sampler, publish, interval_s=0.05, first_step=7)
    sampling.start()
    deadline = time.monotonic() + 10
    while sampler.count < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert published == []  # held: they go to the writer together, every SEND_EVERY_S
    last = sampling.stop()
    steps = [step for _, step, _ in published]
    assert steps == list(range(7, 7 + len(steps)))
    assert len(steps) >= 4  # the periodic samples, then the last one at stop
    assert last == steps[-1]
    taken = [taken_ms for _, _, taken_ms in published]
    assert started_ms <= taken[0] <= taken[-1]
    assert taken == sorted(taken)  # each with the time it was taken
    # The first reading (1) primed the sampler and was dropped.
    assert published[0][0] == {"system/reading": 2.0}
    assert sampler.thread == "blocktrain-sysmetrics"
    assert sampling.stop() == last  # stopping twice changes nothing


def test_a_sampler_that_cannot_start_publishes_nothing():
    def broken() -> Counting:
        raise ImportError("No module named 'psutil'")

    published: list[int] = []
    sampling = SystemMetrics(broken, lambda _, step, __: published.append(step),
                             interval_s=0.01, first_step=0)  # fmt: skip
    sampling.start()
    time.sleep(0.1)
    assert sampling.stop() is None
    assert published == []
