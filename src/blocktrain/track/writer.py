"""A background writer that sends a run's records to MLflow in order and never blocks training.

Every record (metrics, params, tags, artifacts, status) goes into a queue; one thread sends
them, batching metrics, and on a failure keeps them and retries with exponential backoff.
What is still unsent when the process must end is written to a spill file (JSON lines) that
:func:`replay` sends later, so an unreachable server loses nothing. The writer of a resumed
run leaves out the metric points that the run held at or below their key's step before the
attempt began (:mod:`blocktrain.track.repeats`), so that the steps an attempt repeats after
its checkpoint are not logged twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from blocktrain.core.retry import RetryPolicy
from blocktrain.track.repeats import drop_repeats

OpKind = Literal["create", "metrics", "params", "tags", "artifacts", "status", "batch"]
# MLflow's log_batch limits per request.
_BATCH_LIMIT: dict[str, int] = {"metrics": 1000, "params": 100, "tags": 100}
# Error codes that a retry cannot fix; anything else (network, 5xx, locked database) is retried.
_PERMANENT_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)
# The pauses between sends while the server cannot be reached. The writer never gives up (what
# is unsent at the end is spilled), so only the policy's pauses count, not its attempts.
DEFAULT_RETRY = RetryPolicy(first_delay_s=0.5, max_delay_s=30.0, jitter=False)


class Backend(Protocol):
    """The few MLflow operations the writer needs (see :mod:`blocktrain.track.backend`)."""

    def create_run(self, experiment: str, run_name: str | None, tags: Mapping[str, str]) -> str: ...
    def log_batch(
        self,
        run_id: str,
        metrics: list[tuple[str, float, int, int]],
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None: ...
    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None: ...
    def set_status(self, run_id: str, status: str, end_time_ms: int | None) -> None: ...


@dataclass(slots=True)
class Op:
    """One record to send; ``data`` is JSON-able so that it can be spilled and replayed."""

    kind: OpKind
    data: dict[str, Any] = field(default_factory=dict[str, Any])

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "data": self.data})

    @staticmethod
    def from_json(line: str) -> Op:
        raw = json.loads(line)
        return Op(raw["kind"], raw["data"])


def is_permanent(exc: BaseException) -> bool:
    """Whether an error means the request is wrong (drop it) rather than the server away."""
    code = getattr(exc, "error_code", None)
    return isinstance(code, str) and code in _PERMANENT_CODES


def coalesce(ops: list[Op], run_id: str | None) -> tuple[int, Op]:
    """How many leading ops go into the next request, and that request.

    Consecutive metrics, params and tags merge into one ``log_batch`` within MLflow's limits.
    """
    head = ops[0]
    if head.kind not in _BATCH_LIMIT:
        return 1, head
    batch: dict[str, Any] = {"metrics": [], "params": {}, "tags": {}, "run_id": run_id}
    taken = 0
    for op in ops:
        if op.kind not in _BATCH_LIMIT:
            break
        bucket = batch[op.kind]
        incoming = op.data["items"]
        if len(bucket) + len(incoming) > _BATCH_LIMIT[op.kind] and taken:
            break
        if op.kind == "metrics":
            bucket.extend(incoming)
        else:
            bucket.update(incoming)
        taken += 1
    return taken, Op("batch", batch)


Lane = Literal["records", "artifacts"]


HeldSteps = Mapping[str, int]
"""Per metric key, the highest step that a run held when an attempt of it began."""


class RunWriter:
    """Sends ops for one run from a daemon thread; thread-safe ``submit``.

    Records (the run, metrics, params, tags, status) and artifacts go in two lanes, each in
    order and each with its own retries: the artifact store is often another service (S3)
    with its own credentials, and while it fails the records still reach the tracking server.

    ``held``: for a resumed run, what it held when this attempt began, or how to read that
    from the run (called with its id, in the sending thread, before the first metrics go, and
    again after a failure); metric points at or below those steps are not sent. None: a new
    run, which holds nothing.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        run_id: str | None,
        warn: Callable[[str], None],
        retry: RetryPolicy | None = None,
        held: HeldSteps | Callable[[str], HeldSteps] | None = None,
    ) -> None:
        self._backend = backend
        self._held = held
        self._repeats = 0
        self._run_id = run_id
        self._warn = warn
        self._retry = retry or DEFAULT_RETRY
        if self._retry.first_delay_s <= 0:
            raise ValueError("the writer needs a pause between retries (first_delay_s > 0)")
        self._lanes: dict[Lane, deque[Op]] = {"records": deque(), "artifacts": deque()}
        self._lock = threading.Condition()
        self._stopping = False
        self._in_flight: tuple[Lane, int] | None = None
        """The lane, and how many ops at its head, the sender is sending right now."""
        self._retry_at: dict[Lane, float] = {"records": 0.0, "artifacts": 0.0}
        self._delays = {lane: iter(self._retry.delays()) for lane in self._lanes}
        self._failing_since: dict[Lane, float | None] = {"records": None, "artifacts": None}
        self._thread = threading.Thread(target=self._loop, name="blocktrain-mlflow", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> str | None:
        with self._lock:
            return self._run_id

    @property
    def repeats(self) -> int:
        """How many metric points were left out as repeats of points the run held."""
        with self._lock:
            return self._repeats

    def submit(self, op: Op) -> None:
        with self._lock:
            lane = _lane(op)
            queue = self._lanes[lane]
            if lane == "artifacts":
                # A newer upload of the same folder makes a queued one pointless; the op being
                # sent stays, since the sender removes exactly what it sent once it went through.
                sending = self._sending("artifacts")
                waiting = [p for p in list(queue)[sending:] if p.data != op.data]
                self._lanes[lane] = queue = deque(list(queue)[:sending] + waiting)
            queue.append(op)
            self._lock.notify_all()

    def wait_run_id(self, timeout_s: float) -> str | None:
        """The run id once the ``create`` op went through, or None after ``timeout_s``."""
        with self._lock:
            self._lock.wait_for(lambda: self._run_id is not None, timeout=timeout_s)
            return self._run_id

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything submitted so far is sent; False if that took too long."""
        with self._lock:
            return self._lock.wait_for(self._idle, timeout=timeout_s)

    def close(self, timeout_s: float, spill_to: Path | None) -> int:
        """Send what remains within ``timeout_s``, then spill the rest; returns how many spilled."""
        self.flush(timeout_s)
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        # A request stuck past this join may still land later; a duplicate beats a loss.
        self._thread.join(timeout=1.0)
        with self._lock:
            left = [*self._lanes["records"], *self._lanes["artifacts"]]
        if left and spill_to is not None:
            write_spill(spill_to, self.run_id, left)
        return len(left)

    def _idle(self) -> bool:
        return not any(self._lanes.values())

    def _sending(self, lane: Lane) -> int:
        return self._in_flight[1] if self._in_flight and self._in_flight[0] == lane else 0

    def _next(self, now: float) -> tuple[Lane, int, Op] | float | None:
        """The lane, count and request to send now; else when a retry is due (None: nothing
        to send). Artifacts wait for the run to exist."""
        due: float | None = None
        for lane, queue in self._lanes.items():
            if not queue or (lane == "artifacts" and self._run_id is None):
                continue
            if now < self._retry_at[lane]:
                due = self._retry_at[lane] if due is None else min(due, self._retry_at[lane])
                continue
            count, request = coalesce(list(queue), self._run_id)
            return lane, count, request
        return due

    def _loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._stopping:
                        return
                    chosen = self._next(time.monotonic())
                    if isinstance(chosen, tuple):
                        break
                    self._lock.wait(None if chosen is None else chosen - time.monotonic())
                lane, count, request = chosen
                self._in_flight = (lane, count)
            sent = self._send(lane, request)
            with self._lock:
                self._in_flight = None
                if sent:
                    for _ in range(count):
                        self._lanes[lane].popleft()
                    self._retry_at[lane] = 0.0
                    self._delays[lane] = iter(self._retry.delays())
                else:
                    self._retry_at[lane] = time.monotonic() + next(self._delays[lane])
                self._lock.notify_all()

    def _send(self, lane: Lane, op: Op) -> bool:
        """True when the op is done with (sent, or dropped as unfixable)."""
        try:
            sending = self._without_repeats(op)
            if sending is not None:
                apply(self._backend, sending, self._run_id, self._set_run_id)
        except Exception as exc:  # noqa: BLE001 - any failure is either retried or reported
            if is_permanent(exc):
                self._warn(f"MLflow rejected a {op.kind} record and it was dropped: {exc}")
                return True
            if self._failing_since[lane] is None:
                self._failing_since[lane] = time.monotonic()
                self._warn(_failing(lane, op, exc))
            return False
        since = self._failing_since[lane]
        if since is not None:
            self._failing_since[lane] = None
            what = "MLflow" if lane == "records" else "The run's artifact store"
            self._warn(f"{what} reachable again after {time.monotonic() - since:.0f} s; sending "
                       f"buffered {lane}")  # fmt: skip
        return True

    def _without_repeats(self, op: Op) -> Op | None:
        """``op`` less the metric points the run held before this attempt; None when nothing
        is left of it. Reads what the run held first, if that is not known yet."""
        held = self._held
        if held is None or op.kind != "batch" or not op.data["metrics"]:
            return op
        if callable(held):
            target = op.data.get("run_id") or self._run_id
            if target is None:
                return op
            try:
                held = dict(held(target))
            except Exception as exc:
                if not is_permanent(exc):
                    raise
                # A run whose history cannot be read is not held back: a repeat beats a loss.
                self._warn(f"could not read the steps run {target} holds ({_short(exc)})")
                held = {}
            self._held = held
        kept = drop_repeats(op.data["metrics"], held)
        if len(kept) == len(op.data["metrics"]):
            return op
        with self._lock:
            self._repeats += len(op.data["metrics"]) - len(kept)
        if not (kept or op.data["params"] or op.data["tags"]):
            return None
        return Op("batch", {**op.data, "metrics": kept})

    def _set_run_id(self, run_id: str) -> None:
        with self._lock:
            self._run_id = run_id
            self._lock.notify_all()


def _lane(op: Op) -> Lane:
    return "artifacts" if op.kind == "artifacts" else "records"


def _failing(lane: Lane, op: Op, exc: BaseException) -> str:
    if lane == "records":
        return f"MLflow unreachable ({_short(exc)}); buffering records and retrying"
    hint = (
        "; an s3:// store written by this process needs MLFLOW_S3_ENDPOINT_URL and AWS "
        "credentials in its environment"
        if type(exc).__module__.startswith(("botocore", "boto3"))
        else ""
    )
    return (
        f"could not upload {op.data.get('artifact_path')!r} to the run's artifact store "
        f"({_short(exc)}); the files stay in {op.data.get('local_dir')} and uploads are "
        f"retried{hint}"
    )


def apply(backend: Backend, op: Op, run_id: str | None, on_created: Callable[[str], None]) -> None:
    """Perform one op against the backend."""
    data = op.data
    if op.kind == "create":
        on_created(backend.create_run(data["experiment"], data.get("run_name"), data["tags"]))
        return
    target = data.get("run_id") or run_id
    if target is None:
        raise RuntimeError("the run was not created yet")
    if op.kind == "batch":
        metrics = [(m[0], float(m[1]), int(m[2]), int(m[3])) for m in data["metrics"]]
        backend.log_batch(target, metrics, data["params"], data["tags"])
    elif op.kind == "artifacts":
        if Path(data["local_dir"]).exists():
            backend.log_artifacts(target, data["local_dir"], data["artifact_path"])
    elif op.kind == "status":
        backend.set_status(target, data["status"], data.get("end_time_ms"))
    else:
        _, batch = coalesce([op], target)
        apply(backend, batch, target, on_created)


def write_spill(path: Path, run_id: str | None, ops: list[Op]) -> None:
    """Append unsent ops to ``path``, each pinned to its run so that replay needs nothing else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for op in ops:
            pinned = op
            if run_id is not None and op.kind != "create":
                pinned = Op(op.kind, {**op.data, "run_id": op.data.get("run_id") or run_id})
            out.write(pinned.to_json() + "\n")
        out.flush()


def replay(
    backend: Backend, path: Path, screen: Callable[[Op, str | None], Op | None] | None = None
) -> int:
    """Send a spill file's ops in order; on success delete it. Returns the number sent.

    ``screen`` sees each op, with the run it goes to (None: the run this file creates), just
    before it is sent, and returns what to send instead, or None to leave it out.
    """
    ops = [Op.from_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    created: list[str] = []
    sent = 0
    for op in ops:
        run_id = created[-1] if created else None
        sending = op
        if screen is not None and op.kind != "create":
            sending = screen(op, op.data.get("run_id") or run_id)
        if sending is not None:
            apply(backend, sending, run_id, created.append)
            sent += 1
    path.unlink()
    return sent


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."
