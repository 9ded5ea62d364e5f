"""A background writer that sends a run's records to MLflow in order and never blocks training.

Every record (metrics, params, tags, artifacts, status) goes into a queue; one thread sends
them, batching metrics, and on a failure keeps them and retries with exponential backoff.
What is still unsent when the process must end is written to a spill file (JSON lines) that
:func:`replay` sends later, so an unreachable server loses nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

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


class Backend(Protocol):
    """The few MLflow operations the writer needs (see :mod:`blocktrain.mlflowbackend`)."""

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


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Exponential backoff between attempts while the server cannot be reached."""

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.first_delay_s <= 0 or self.max_delay_s < self.first_delay_s or self.factor < 1:
            raise ValueError("need 0 < first_delay_s <= max_delay_s and factor >= 1")

    def delays(self) -> Iterable[float]:
        delay = self.first_delay_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_delay_s)


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


class RunWriter:
    """Sends ops for one run from a daemon thread; thread-safe ``submit``."""

    def __init__(
        self,
        backend: Backend,
        *,
        run_id: str | None,
        warn: Callable[[str], None],
        retry: RetryPolicy | None = None,
    ) -> None:
        self._backend = backend
        self._run_id = run_id
        self._warn = warn
        self._retry = retry or RetryPolicy()
        self._pending: deque[Op] = deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        """How many ops at the head of ``_pending`` the sender is sending right now."""
        self._outage_since: float | None = None
        self._idle = True
        self._thread = threading.Thread(target=self._loop, name="blocktrain-mlflow", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> str | None:
        with self._lock:
            return self._run_id

    def submit(self, op: Op) -> None:
        with self._lock:
            if op.kind == "artifacts":
                # A newer upload of the same folder makes a queued one pointless; the ops being
                # sent stay, since the sender removes exactly that many once they went through.
                sending = list(self._pending)[: self._in_flight]
                waiting = [p for p in list(self._pending)[self._in_flight :] if p.data != op.data]
                self._pending = deque(sending + waiting)
            self._pending.append(op)
            self._idle = False
            self._lock.notify_all()

    def wait_run_id(self, timeout_s: float) -> str | None:
        """The run id once the ``create`` op went through, or None after ``timeout_s``."""
        with self._lock:
            self._lock.wait_for(lambda: self._run_id is not None, timeout=timeout_s)
            return self._run_id

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything submitted so far is sent; False if that took too long."""
        with self._lock:
            return self._lock.wait_for(lambda: self._idle, timeout=timeout_s)

    def close(self, timeout_s: float, spill_to: Path | None) -> int:
        """Send what remains within ``timeout_s``, then spill the rest; returns how many spilled."""
        self.flush(timeout_s)
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        # A request stuck past this join may still land later; a duplicate beats a loss.
        self._thread.join(timeout=1.0)
        with self._lock:
            left = list(self._pending)
        if left and spill_to is not None:
            write_spill(spill_to, self.run_id, left)
        return len(left)

    def _loop(self) -> None:
        delays = iter(self._retry.delays())
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                count, request = coalesce(list(self._pending), self._run_id)
                self._in_flight = count
            sent = self._send(request)
            with self._lock:
                self._in_flight = 0
                if sent:
                    for _ in range(count):
                        self._pending.popleft()
                    self._idle = not self._pending
                    self._lock.notify_all()
                else:
                    self._lock.wait(timeout=next(delays))
            if sent:
                delays = iter(self._retry.delays())

    def _send(self, op: Op) -> bool:
        """True when the op is done with (sent, or dropped as unfixable)."""
        try:
            apply(self._backend, op, self._run_id, self._set_run_id)
        except Exception as exc:  # noqa: BLE001 - any failure is either retried or reported
            if is_permanent(exc):
                self._warn(f"MLflow rejected a {op.kind} record and it was dropped: {exc}")
                return True
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                self._warn(f"MLflow unreachable ({_short(exc)}); buffering records and retrying")
            return False
        if self._outage_since is not None:
            outage = time.monotonic() - self._outage_since
            self._outage_since = None
            self._warn(f"MLflow reachable again after {outage:.0f} s; sending buffered records")
        return True

    def _set_run_id(self, run_id: str) -> None:
        with self._lock:
            self._run_id = run_id
            self._lock.notify_all()


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


def replay(backend: Backend, path: Path) -> int:
    """Send a spill file's ops in order; on success delete it. Returns the number sent."""
    ops = [Op.from_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    created: list[str] = []
    for op in ops:
        apply(backend, op, created[-1] if created else None, created.append)
    path.unlink()
    return len(ops)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."
