"""How a call ended: every ending, with what the tracker and the notifier make of it."""

from __future__ import annotations

import pytest

from blocktrain.core import outcome
from blocktrain.core.outcome import Outcome, classify
from blocktrain.errors import RequeueRequested, StopRequested, Terminated, TrackingError


class _Preempted(RequeueRequested):
    """A subclass is classified as its base."""


CASES: list[tuple[BaseException | None, str, str, str, bool]] = [
    (None, "finished", "FINISHED", "finished", False),
    (SystemExit(), "finished", "FINISHED", "finished", False),
    (SystemExit(0), "finished", "FINISHED", "finished", False),
    (SystemExit(3), "exited", "FAILED", "crashed", False),
    (SystemExit("bad config"), "exited", "FAILED", "crashed", False),
    (RequeueRequested("timeout"), "requeued", "SCHEDULED", "requeued", False),
    (_Preempted("preemption"), "requeued", "SCHEDULED", "requeued", False),
    (StopRequested("stopped by slurm-stop"), "stopped", "KILLED", "killed", False),
    (Terminated("received signal 15"), "killed", "KILLED", "killed", False),
    (KeyboardInterrupt(), "killed", "KILLED", "killed", False),
    (ValueError("kaboom"), "crashed", "FAILED", "crashed", True),
    (TrackingError("params are immutable"), "crashed", "FAILED", "crashed", True),
    (MemoryError(), "crashed", "FAILED", "crashed", True),
    (GeneratorExit(), "crashed", "FAILED", "crashed", True),
]


@pytest.mark.parametrize(("error", "name", "status", "notice", "keeps_traceback"), CASES)
def test_each_ending(
    error: BaseException | None, name: str, status: str, notice: str, keeps_traceback: bool
) -> None:
    ending = classify(error)
    assert (ending.name, ending.mlflow_status, ending.notice, ending.keeps_traceback) == (
        name,
        status,
        notice,
        keeps_traceback,
    )


def test_every_ending_is_reached() -> None:
    endings = {value for value in vars(outcome).values() if isinstance(value, Outcome)}
    assert {classify(error) for error, *_ in CASES} == endings
    assert len({ending.name for ending in endings}) == len(endings)
