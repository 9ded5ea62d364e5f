"""Replaying spill files: which records an older attempt's file may still send, in what order.

The real server is exercised in tests/integration/local/test_tracking_outage.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from blocktrain.track.backend import ATTEMPT_TAG, MlflowBackend
from blocktrain.track.replay import (
    for_replay,
    replay_unsent,
    send_spill,
    spill_attempt,
    spill_files,
    spill_path,
)
from blocktrain.track.writer import Op, write_spill

RUN = "abc123"


def status(value: str, end: int | None = 1000) -> Op:
    return Op("status", {"status": value, "end_time_ms": end, "run_id": RUN})


def test_a_spill_of_the_latest_attempt_is_sent_whole():
    for op in (status("FINISHED"), status("FAILED"), Op("tags", {"items": {ATTEMPT_TAG: "2"}})):
        assert for_replay(op, spill_attempt=2, run_attempt=2) == op
    # The run's attempt not there yet: the spill's own tags had not reached the server.
    assert for_replay(status("FAILED"), spill_attempt=3, run_attempt=2) == status("FAILED")


def test_an_older_attempts_status_does_not_take_the_run_back():
    assert for_replay(status("FAILED"), spill_attempt=1, run_attempt=2) is None
    assert for_replay(status("FINISHED"), spill_attempt=1, run_attempt=2) is None
    assert for_replay(Op("status", {"status": "RUNNING"}), spill_attempt=1, run_attempt=3) is None


def test_an_older_attempts_other_records_are_sent_without_its_attempt_number():
    metrics = Op("metrics", {"items": [["loss", 0.5, 1, 10]]})
    assert for_replay(metrics, spill_attempt=1, run_attempt=2) == metrics
    tags = Op("tags", {"items": {ATTEMPT_TAG: "1", "host": "n1"}, "run_id": RUN})
    assert for_replay(tags, spill_attempt=1, run_attempt=2) == Op(
        "tags", {"items": {"host": "n1"}, "run_id": RUN}
    )
    assert for_replay(Op("tags", {"items": {ATTEMPT_TAG: "1"}}), 1, 2) is None


def test_unknown_attempts_change_nothing():
    assert for_replay(status("FAILED"), spill_attempt=None, run_attempt=2) == status("FAILED")
    assert for_replay(status("FAILED"), spill_attempt=1, run_attempt=None) == status("FAILED")


def test_spill_names_carry_the_attempt_and_sort_by_it(tmp_path: Path):
    names = [spill_path(tmp_path, RUN, n) for n in (10, 2, 1)] + [spill_path(tmp_path, "zz", 1)]
    for path in names:
        write_spill(path, RUN, [status("FINISHED")])
    (names[0].parent / "by-hand.jsonl").write_text("")
    assert spill_attempt(names[0]) == 10
    assert spill_attempt(tmp_path / "by-hand.jsonl") is None
    assert [p.name for p in spill_files(tmp_path, RUN)] == [
        f"{RUN}-attempt-1.jsonl", f"{RUN}-attempt-2.jsonl", f"{RUN}-attempt-10.jsonl"
    ]  # fmt: skip
    assert len(spill_files(tmp_path)) == 5
    assert spill_files(tmp_path / "nothing") == []


class FakeStore:
    """The few MlflowBackend calls a replay makes, on one run held in memory."""

    def __init__(self, attempt: int, status: str) -> None:
        self.tags: dict[str, str] = {ATTEMPT_TAG: str(attempt)}
        self.status = status
        self.end_time_ms: int | None = None
        self.metrics: list[tuple[str, float, int, int]] = []

    def get_run(self, run_id: str) -> Any:
        assert run_id == RUN
        return SimpleNamespace(data=SimpleNamespace(tags=dict(self.tags)))

    def log_batch(
        self,
        run_id: str,
        metrics: list[tuple[str, float, int, int]],
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        self.metrics.extend(metrics)
        self.tags.update(tags)

    def set_status(self, run_id: str, status: str, end_time_ms: int | None) -> None:
        self.status, self.end_time_ms = status, end_time_ms

    def latest_steps(self, run_id: str) -> dict[str, int]:
        latest: dict[str, int] = {}
        for key, _, _, step in self.metrics:
            latest[key] = max(step, latest.get(key, step))
        return latest

    def steps_of(self, run_id: str, key: str) -> set[int]:
        return {step for k, _, _, step in self.metrics if k == key}


def attempt_records(attempt: int, final: str, end: int) -> list[Op]:
    return [
        Op("tags", {"items": {ATTEMPT_TAG: str(attempt), "host": f"node{attempt}"}}),
        Op("status", {"status": "RUNNING"}),
        Op("metrics", {"items": [["loss", 0.5, end - 1, attempt * 10]]}),
        Op("status", {"status": final, "end_time_ms": end}),
    ]


def test_a_late_spill_of_an_earlier_attempt_leaves_the_later_attempts_end(tmp_path: Path):
    store = FakeStore(attempt=2, status="FINISHED")
    older = spill_path(tmp_path, RUN, 1)
    write_spill(older, RUN, attempt_records(1, "FAILED", end=1000))
    assert send_spill(cast(MlflowBackend, store), older) == 2  # the tags and the metrics
    assert (store.status, store.tags[ATTEMPT_TAG], store.tags["host"]) == ("FINISHED", "2", "node1")
    assert store.metrics == [("loss", 0.5, 999, 10)]
    assert not older.exists()
    assert not list(older.parent.iterdir())  # nor its lock file


def test_the_last_attempts_final_status_is_sent_over_a_wrong_one(tmp_path: Path):
    # A finalizer that could not know better marked the run FAILED; the attempt's own FINISHED
    # was kept through an outage.
    store = FakeStore(attempt=1, status="FAILED")
    write_spill(
        spill_path(tmp_path, RUN, 1), RUN, [Op("status", {"status": "FINISHED", "end_time_ms": 5})]
    )
    replay_unsent(cast(MlflowBackend, store), tmp_path, RUN)
    assert (store.status, store.end_time_ms) == ("FINISHED", 5)
    assert spill_files(tmp_path) == []


def test_spills_of_two_attempts_end_as_the_later_one_did(tmp_path: Path):
    store = FakeStore(attempt=0, status="SCHEDULED")
    write_spill(spill_path(tmp_path, RUN, 2), RUN, attempt_records(2, "FINISHED", end=2000))
    write_spill(spill_path(tmp_path, RUN, 1), RUN, attempt_records(1, "KILLED", end=1000))
    replay_unsent(cast(MlflowBackend, store), tmp_path)
    assert (store.status, store.end_time_ms, store.tags[ATTEMPT_TAG]) == ("FINISHED", 2000, "2")


def test_a_file_sent_by_another_process_meanwhile_is_not_sent_again(tmp_path: Path):
    assert send_spill(cast(MlflowBackend, FakeStore(1, "RUNNING")), tmp_path / "gone.jsonl") is None


def test_a_spill_that_cannot_be_sent_stays_for_later(tmp_path: Path):
    class Down(FakeStore):
        def get_run(self, run_id: str) -> Any:
            raise ConnectionError("connection refused")

    spill = spill_path(tmp_path, RUN, 1)
    write_spill(spill, RUN, [status("FINISHED")])
    replay_unsent(cast(MlflowBackend, Down(1, "RUNNING")), tmp_path)
    assert spill_files(tmp_path) == [spill]
    assert json.loads(spill.read_text())["data"]["status"] == "FINISHED"
