"""Each metric point (key, step) of a run once: the rules (blocktrain.track.repeats), the writer
of a resumed attempt and the replay of spill files, against in-memory backends.

The same against a real MLflow server, with a killed attempt: tests/integration/test_track_resume.py.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blocktrain.core.retry import RetryPolicy
from blocktrain.track.repeats import (
    drop_held,
    drop_repeats,
    highest_steps,
    keys_to_read,
    lowest_steps,
)
from blocktrain.track.replay import unsent_points
from blocktrain.track.writer import Op, RunWriter, replay, write_spill

FAST = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, jitter=False)


def point(key: str, step: int, value: float | None = None) -> list[Any]:
    return [key, float(step) if value is None else value, 1000 + step, step]


def steps(items: list[Any], key: str = "loss") -> list[int]:
    return [int(i[3]) for i in items if i[0] == key]


# ---- the rules ------------------------------------------------------------------------------


def test_a_resumed_attempt_drops_the_points_at_or_below_what_the_run_held():
    items = [point("loss", s) for s in range(30, 80, 10)] + [point("attempt", 3)]
    kept = drop_repeats(items, {"loss": 50, "attempt": 2})
    assert steps(kept) == [60, 70]
    assert steps(kept, "attempt") == [3]


def test_a_key_the_run_never_held_is_kept_whatever_its_step():
    assert steps(drop_repeats([point("val", 0), point("val", 5)], {"loss": 100}), "val") == [0, 5]


def test_a_point_without_a_step_is_at_step_zero():
    stepless = ["note", 1.0, 5, None]
    assert drop_repeats([stepless], {"note": 0}) == []
    assert lowest_steps([stepless]) == {"note": 0}


def test_highest_and_lowest_steps_per_key():
    assert highest_steps([("a", 3), ("b", 1), ("a", 7), ("a", 5)]) == {"a": 7, "b": 1}
    items = [point("a", 30), point("a", 10), point("b", 4)]
    assert lowest_steps(items) == {"a": 10, "b": 4}


def test_a_replay_reads_only_the_keys_the_run_holds_at_or_above_the_spilled_steps():
    lowest = {"loss": 40, "val": 100, "new": 0, "edge": 7}
    latest = {"loss": 70, "val": 50, "edge": 7, "other": 900}
    assert keys_to_read(lowest, latest) == ["edge", "loss"]


def test_a_replay_drops_only_the_steps_the_run_holds():
    items = [point("loss", s) for s in (0, 10, 20, 80, 90)] + [point("val", 10)]
    kept = drop_held(items, {"loss": {10, 20, 40, 200}})
    assert steps(kept) == [0, 80, 90]
    assert steps(kept, "val") == [10]


# ---- the writer of a resumed attempt -------------------------------------------------------


class Server:
    """An MLflow run store in memory: each point it receives is kept, repeats and all."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.points: list[tuple[str, float, int, int]] = []
        self.params: dict[str, str] = {}
        self.reads = 0

    def _check(self) -> None:
        if self.down.is_set():
            raise ConnectionError("connection refused")

    def create_run(self, experiment: str, run_name: str | None, tags: Mapping[str, str]) -> str:
        self._check()
        return "new"

    def log_batch(
        self,
        run_id: str,
        metrics: list[tuple[str, float, int, int]],
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        self._check()
        self.points.extend(metrics)
        self.params.update(params)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        self._check()

    def set_status(self, run_id: str, status: str, end_time_ms: int | None) -> None:
        self._check()

    def latest_steps(self, run_id: str) -> dict[str, int]:
        self._check()
        self.reads += 1
        return highest_steps((key, step) for key, _, _, step in self.points)

    def steps_of(self, run_id: str, key: str) -> set[int]:
        self._check()
        self.reads += 1
        return {step for k, _, _, step in self.points if k == key}

    def steps(self, key: str = "loss") -> list[int]:
        return sorted(step for k, _, _, step in self.points if k == key)


def log(writer: RunWriter, key: str, first: int, last: int, every: int = 10) -> None:
    for step in range(first, last + 1, every):
        writer.submit(Op("metrics", {"items": [point(key, step)]}))


def killed_after(server: Server, last: int) -> None:
    """An attempt that logged steps 0..``last`` and was killed (nothing spilled)."""
    writer = RunWriter(server, run_id="r", warn=lambda _: None, retry=FAST)
    log(writer, "loss", 0, last)
    assert writer.flush(5)


def test_a_resumed_writer_does_not_send_the_steps_the_run_held(tmp_path: Path):
    server = Server()
    killed_after(server, 70)
    held = server.latest_steps("r")
    writer = RunWriter(server, run_id="r", warn=lambda _: None, retry=FAST, held=held)
    writer.submit(Op("params", {"items": {"lr": "0.1"}}))
    log(writer, "loss", 40, 120)  # resumed from the checkpoint at step 40
    assert writer.close(5, tmp_path / "spill.jsonl") == 0
    assert server.steps() == list(range(0, 130, 10))
    assert server.params == {"lr": "0.1"}
    assert writer.repeats == 4


def test_what_the_run_held_is_read_once_the_server_answers(tmp_path: Path):
    server = Server()
    killed_after(server, 70)
    server.down.set()  # away when the next attempt starts: it cannot know what the run holds
    writer = RunWriter(
        server, run_id="r", warn=lambda _: None, retry=FAST, held=server.latest_steps
    )
    log(writer, "loss", 40, 100)
    server.down.clear()
    log(writer, "loss", 110, 120)
    assert writer.close(5, tmp_path / "spill.jsonl") == 0
    assert server.steps() == list(range(0, 130, 10))
    assert server.reads == 1


def test_a_new_run_holds_nothing_back(tmp_path: Path):
    server = Server()
    writer = RunWriter(server, run_id=None, warn=lambda _: None, retry=FAST)
    writer.submit(Op("create", {"experiment": "e", "tags": {}}))
    for _ in range(2):
        log(writer, "loss", 0, 0)  # a point logged twice in one attempt is the caller's
    assert writer.close(5, tmp_path / "spill.jsonl") == 0
    assert server.steps() == [0, 0]
    assert server.reads == 0


# ---- replaying spill files ------------------------------------------------------------------


def spilled(tmp_path: Path, ops: list[Op], run_id: str | None = "r") -> Path:
    path = tmp_path / "unsent" / f"{run_id or 'folder'}-attempt-1.jsonl"
    write_spill(path, run_id, ops)
    return path


def replayed(server: Server, path: Path) -> int:
    points = unsent_points(server, path)
    return replay(server, path, points)


def test_a_replay_run_again_after_it_was_cut_short_sends_each_point_once(tmp_path: Path):
    server = Server()
    path = spilled(tmp_path, [Op("metrics", {"items": [point("loss", s)]}) for s in range(5)])
    # The first replay got three points through, then lost the server.
    server.points.extend(("loss", float(s), 1000 + s, s) for s in range(3))
    assert replayed(server, path) == 2
    assert server.steps() == [0, 1, 2, 3, 4]
    assert not path.exists()


def test_a_replay_after_a_later_attempt_sends_only_what_the_run_lacks(tmp_path: Path):
    server = Server()
    killed_after(server, 30)  # attempt 1 sent 0..30, then the server went away
    # Attempt 1 kept 40..70 when it ended; attempt 2 went on from its checkpoint at 40 to 100.
    path = spilled(
        tmp_path, [Op("metrics", {"items": [point("loss", s)]}) for s in (40, 50, 60, 70)]
    )
    attempt_2 = RunWriter(server, run_id="r", warn=lambda _: None, retry=FAST, held={"loss": 30})
    log(attempt_2, "loss", 40, 100)
    assert attempt_2.close(5, None) == 0
    assert replayed(server, path) == 0
    assert server.steps() == list(range(0, 110, 10))


def test_a_replay_keeps_what_precedes_the_runs_points_and_the_batches_other_records(
    tmp_path: Path,
):
    server = Server()
    server.points.extend([("loss", 1.0, 1, 80), ("loss", 1.0, 1, 90)])
    batch = Op(
        "batch",
        {"metrics": [point("loss", 70), point("loss", 80)], "params": {"a": "1"}, "tags": {}},
    )
    path = spilled(tmp_path, [Op("metrics", {"items": [point("loss", 60)]}), batch])
    assert replayed(server, path) == 2
    assert server.steps() == [60, 70, 80, 90]
    assert server.params == {"a": "1"}


def test_a_replay_that_creates_its_run_reads_nothing(tmp_path: Path):
    server = Server()
    create = Op("create", {"experiment": "e", "tags": {}})
    metrics = [Op("metrics", {"items": [point("loss", 0)]}) for _ in range(2)]
    path = spilled(tmp_path, [create, *metrics], run_id=None)
    assert replayed(server, path) == 3
    assert server.steps() == [0, 0]
    assert server.reads == 0


def test_a_file_whose_run_holds_none_of_its_keys_costs_one_read(tmp_path: Path):
    server = Server()
    killed_after(server, 30)
    reads = server.reads
    path = spilled(
        tmp_path,
        [Op("metrics", {"items": [point("loss", s), point("val", s)]}) for s in (40, 50)],
    )
    assert replayed(server, path) == 2
    assert server.reads == reads + 1
    assert server.steps() == [0, 10, 20, 30, 40, 50]
