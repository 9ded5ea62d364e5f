"""The writer's ordering, batching, retry and spill logic, against an in-memory backend.

The real MLflow server is exercised in tests/integration/test_track_server.py; here a recording
backend lets each failure happen at an exact moment.
"""

import threading
from collections.abc import Mapping
from pathlib import Path

from blocktrain.core.retry import RetryPolicy
from blocktrain.track.writer import Op, RunWriter, coalesce, replay

FAST = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, jitter=False)


class UnreachableError(ConnectionError):
    pass


class RejectedError(Exception):
    error_code = "INVALID_PARAMETER_VALUE"


class RecordingBackend:
    def __init__(self) -> None:
        self.down = threading.Event()
        self.calls: list[tuple[str, object]] = []
        self.metrics: list[tuple[str, float, int, int]] = []
        self.params: dict[str, str] = {}

    def _check(self) -> None:
        if self.down.is_set():
            raise UnreachableError("connection refused")

    def create_run(self, experiment: str, run_name: str | None, tags: Mapping[str, str]) -> str:
        self._check()
        self.calls.append(("create", experiment))
        return "run-1"

    def log_batch(self, run_id, metrics, params, tags) -> None:
        self._check()
        if params.get("bad"):
            raise RejectedError("Changing param values is not allowed")
        self.calls.append(("batch", (run_id, len(metrics), len(params), len(tags))))
        self.metrics.extend(metrics)
        self.params.update(params)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        self._check()
        self.calls.append(("artifacts", artifact_path))

    def set_status(self, run_id: str, status: str, end_time_ms: int | None) -> None:
        self._check()
        self.calls.append(("status", status))


def metric(i: int) -> Op:
    return Op("metrics", {"items": [["loss", float(i), 1000 + i, i]]})


def test_coalesce_merges_consecutive_batches_within_limits():
    ops = [metric(1), Op("params", {"items": {"a": "1"}}), metric(2), Op("status", {"status": "X"})]
    count, request = coalesce(ops, "r")
    assert count == 3
    assert len(request.data["metrics"]) == 2
    assert request.data["params"] == {"a": "1"}
    many = [Op("metrics", {"items": [["m", 0.0, 0, i] for i in range(600)]}) for _ in range(2)]
    assert coalesce(many, "r")[0] == 1


def test_records_sent_in_order_after_create(tmp_path: Path):
    backend = RecordingBackend()
    writer = RunWriter(backend, run_id=None, warn=lambda _: None, retry=FAST)
    writer.submit(Op("create", {"experiment": "e", "tags": {}}))
    for i in range(5):
        writer.submit(metric(i))
    writer.submit(Op("status", {"status": "FINISHED"}))
    assert writer.close(5, tmp_path / "spill.jsonl") == 0
    assert writer.run_id == "run-1"
    assert [m[3] for m in backend.metrics] == [0, 1, 2, 3, 4]
    assert backend.calls[0] == ("create", "e")
    assert backend.calls[-1] == ("status", "FINISHED")


def test_outage_buffers_and_flushes_everything_on_recovery(tmp_path: Path):
    backend = RecordingBackend()
    warnings: list[str] = []
    writer = RunWriter(backend, run_id="r", warn=warnings.append, retry=FAST)
    writer.submit(metric(0))
    assert writer.flush(5)
    backend.down.set()
    for i in range(1, 50):
        writer.submit(metric(i))
    assert not writer.flush(0.2)
    backend.down.clear()
    assert writer.flush(5)
    assert [m[3] for m in backend.metrics] == list(range(50))
    assert any("unreachable" in w for w in warnings)
    assert any("reachable again" in w for w in warnings)
    writer.close(1, tmp_path / "spill.jsonl")


def test_permanent_rejection_is_dropped_with_a_warning_and_does_not_block():
    backend = RecordingBackend()
    warnings: list[str] = []
    writer = RunWriter(backend, run_id="r", warn=warnings.append, retry=FAST)
    writer.submit(Op("params", {"items": {"bad": "1"}}))
    writer.submit(Op("status", {"status": "RUNNING"}))
    assert writer.flush(5)
    assert ("status", "RUNNING") in backend.calls
    assert any("rejected" in w for w in warnings)


def test_unsent_records_spill_and_replay_later(tmp_path: Path):
    backend = RecordingBackend()
    backend.down.set()
    writer = RunWriter(backend, run_id=None, warn=lambda _: None, retry=FAST)
    writer.submit(Op("create", {"experiment": "e", "tags": {"t": "1"}}))
    for i in range(3):
        writer.submit(metric(i))
    writer.submit(Op("status", {"status": "FINISHED"}))
    spill = tmp_path / "unsent" / "x.jsonl"
    assert writer.close(0.2, spill) == 5
    assert backend.metrics == []
    backend.down.clear()
    assert replay(backend, spill) == 5
    assert not spill.exists()
    assert [m[3] for m in backend.metrics] == [0, 1, 2]
    assert backend.calls[0] == ("create", "e")
    assert backend.calls[-1] == ("status", "FINISHED")


def test_repeated_artifact_uploads_of_one_folder_are_deduplicated():
    backend = RecordingBackend()
    backend.down.set()
    writer = RunWriter(backend, run_id="r", warn=lambda _: None, retry=FAST)
    for _ in range(10):
        writer.submit(Op("artifacts", {"local_dir": "/", "artifact_path": "logs"}))
    backend.down.clear()
    assert writer.flush(5)
    assert backend.calls.count(("artifacts", "logs")) <= 2


class SlowUploadBackend(RecordingBackend):
    """Holds the first artifact upload until released, to submit while it is being sent."""

    def __init__(self) -> None:
        super().__init__()
        self.uploading = threading.Event()
        self.release = threading.Event()

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        if not self.uploading.is_set():
            self.uploading.set()
            assert self.release.wait(5)
        super().log_artifacts(run_id, local_dir, artifact_path)


def test_a_repeated_upload_submitted_during_its_own_send_loses_nothing(tmp_path: Path):
    backend = SlowUploadBackend()
    writer = RunWriter(backend, run_id="r", warn=lambda _: None, retry=FAST)
    upload = Op("artifacts", {"local_dir": str(tmp_path), "artifact_path": "logs"})
    writer.submit(upload)
    assert backend.uploading.wait(5)
    writer.submit(metric(1))
    writer.submit(Op("artifacts", dict(upload.data)))  # the same folder, queued again
    writer.submit(metric(2))
    backend.release.set()
    assert writer.flush(5)
    assert [m[3] for m in backend.metrics] == [1, 2]
    assert backend.calls.count(("artifacts", "logs")) == 2
    writer.close(1, tmp_path / "spill.jsonl")


class ArtifactStoreDownBackend(RecordingBackend):
    """The tracking server answers; the artifact store (another service) does not."""

    def __init__(self) -> None:
        super().__init__()
        self.store_down = threading.Event()
        self.store_down.set()

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        if self.store_down.is_set():
            raise UnreachableError("Unable to locate credentials")
        super().log_artifacts(run_id, local_dir, artifact_path)


def test_a_failing_artifact_store_does_not_hold_the_records_back(tmp_path: Path):
    backend = ArtifactStoreDownBackend()
    warnings: list[str] = []
    writer = RunWriter(backend, run_id=None, warn=warnings.append, retry=FAST)
    writer.submit(Op("create", {"experiment": "e", "tags": {}}))
    writer.submit(Op("artifacts", {"local_dir": str(tmp_path), "artifact_path": "code"}))
    for i in range(3):
        writer.submit(metric(i))
    writer.submit(Op("status", {"status": "RUNNING"}))
    assert not writer.flush(0.3)  # the upload is still failing...
    assert [m[3] for m in backend.metrics] == [0, 1, 2]  # ...but the records went through
    assert backend.calls[-1] == ("status", "RUNNING")
    [warning] = warnings  # once, however often it was retried
    assert "could not upload 'code' to the run's artifact store" in warning
    assert "Unable to locate credentials" in warning
    assert str(tmp_path) in warning
    backend.store_down.clear()
    assert writer.flush(5)
    assert ("artifacts", "code") in backend.calls
    assert "artifact store reachable again" in warnings[-1]
    writer.close(1, tmp_path / "spill.jsonl")


def test_uploads_still_failing_at_the_end_spill_after_the_records(tmp_path: Path):
    backend = ArtifactStoreDownBackend()
    writer = RunWriter(backend, run_id="r", warn=lambda _: None, retry=FAST)
    writer.submit(Op("artifacts", {"local_dir": str(tmp_path), "artifact_path": "checkpoints"}))
    backend.down.set()  # the server too, for the records
    writer.submit(metric(0))
    writer.submit(Op("status", {"status": "FINISHED"}))
    spill = tmp_path / "unsent.jsonl"
    assert writer.close(0.2, spill) == 3
    backend.down.clear()
    backend.store_down.clear()
    assert replay(backend, spill) == 3
    assert [call[0] for call in backend.calls] == ["batch", "status", "artifacts"]
