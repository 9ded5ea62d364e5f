"""MLflow tracking of an entry function: one run across every attempt of a job.

``@track`` (or :func:`tracking`) starts a run, or resumes the one named by ``BLOCKTRAIN_RUN_ID``
or a ``run_id`` argument; logs the resolved arguments as params (immutable: a conflicting value
is an error, never an overwrite), code and machine facts as tags, captures stdout/stderr per
attempt and rank, and ends the run FINISHED, FAILED or KILLED. Only global rank 0 writes to
MLflow, from a background thread that buffers through outages (see :mod:`blocktrain.track.writer`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ParamSpec, TypeVar, overload

from blocktrain.core.files import write_text_atomic
from blocktrain.core.jobenv import JobContext, job_context
from blocktrain.core.paths import project_root
from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, bound_arguments, env_seconds, flatten
from blocktrain.errors import RequeueRequested, StopRequested, Terminated, TrackingError
from blocktrain.track.backend import (
    EMBEDDED_ARTIFACTS,
    MlflowBackend,
    run_url,
    tracking_uri,
)
from blocktrain.track.gitstate import git_state, git_tags
from blocktrain.track.sysinfo import system_tags
from blocktrain.track.writer import Op, RunWriter, replay

P = ParamSpec("P")
R = TypeVar("R")

_log = logging.getLogger("blocktrain.track")
_current: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
    "blocktrain_tracker", default=None
)
# MLflow's own client retries for minutes; our writer retries in the background instead.
_MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_PARAM_VALUE_LIMIT = 6000
ATTEMPT_TAG = "blocktrain.attempt"


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackConfig:
    """Where and how a run is tracked; read from the environment when a run starts."""

    tracking_uri: str
    experiment: str
    root: Path
    log_dir: Path
    run_name: str | None = None
    upload_interval_s: float = 30.0
    flush_timeout_s: float = 30.0
    start_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("upload_interval_s", "flush_timeout_s", "start_timeout_s"):
            if not getattr(self, name) > 0:
                raise TrackingError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def embedded(self) -> bool:
        return self.tracking_uri.startswith("sqlite:")

    @classmethod
    def from_environ(cls, env: Mapping[str, str], cwd: Path) -> TrackConfig:
        root = project_root(cwd)
        return cls(
            tracking_uri=tracking_uri(env, root),
            experiment=env.get("MLFLOW_EXPERIMENT_NAME") or root.name,
            root=root,
            log_dir=Path(env.get("BLOCKTRAIN_LOG_DIR") or root / ".blocktrain" / "logs"),
            run_name=env.get("BLOCKTRAIN_RUN_NAME") or None,
            upload_interval_s=env_seconds(
                env, "BLOCKTRAIN_LOG_UPLOAD_SECONDS", 30.0, TrackingError
            ),
            flush_timeout_s=env_seconds(
                env, "BLOCKTRAIN_MLFLOW_FLUSH_SECONDS", 30.0, TrackingError
            ),
            start_timeout_s=env_seconds(
                env, "BLOCKTRAIN_MLFLOW_START_SECONDS", 10.0, TrackingError
            ),
        )


@dataclass(slots=True)
class Tracker:
    """The handle user code logs through; on ranks other than 0 every method is a no-op."""

    context: JobContext
    config: TrackConfig
    attempt: int
    attempt_dir: Path
    writer: RunWriter | None = None
    experiment_id: str | None = None
    latest_metrics: dict[str, float] = field(default_factory=dict[str, float])
    last_step: int = 0
    """The highest step logged so far; final metrics are logged at it, not at step 0."""

    @property
    def run_id(self) -> str | None:
        return self.writer.run_id if self.writer is not None else self.context.run_id

    @property
    def run_url(self) -> str | None:
        """A browser link for a server, else ``run <id>`` for the embedded store."""
        run_id = self.run_id
        if run_id is None:
            return None
        link = run_url(self.config.tracking_uri, self.experiment_id or "0", run_id)
        return link or f"run {run_id} ({self.config.tracking_uri})"

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue metrics (never blocks); non-finite values are skipped with a warning."""
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if len(finite) < len(metrics):
            _log.warning("skipped non-finite metric values: %s", sorted(set(metrics) - set(finite)))
        self.latest_metrics.update(finite)
        if step is not None:
            self.last_step = max(self.last_step, step)
        if self.writer is None or not finite:
            return
        now = int(time.time() * 1000)
        items = [[k, v, now, step or 0] for k, v in finite.items()]
        self.writer.submit(Op("metrics", {"items": items}))

    def log_params(self, params: Mapping[str, object]) -> None:
        if self.writer is not None and params:
            self.writer.submit(Op("params", {"items": param_strings(params)}))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.writer is not None and tags:
            self.writer.submit(Op("tags", {"items": dict(tags)}))

    def log_artifacts(self, local_path: str | Path, artifact_path: str = "") -> None:
        """Upload a file or folder (in the background: keep it in place until the run ends)."""
        if self.writer is not None:
            data = {"local_dir": str(Path(local_path).resolve()), "artifact_path": artifact_path}
            self.writer.submit(Op("artifacts", data))


def current() -> Tracker | None:
    """The tracker of the tracked call running in this context, if any."""
    return _current.get()


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metrics to the current run; a no-op outside a tracked call and on ranks other than 0."""
    tracker = current()
    if tracker is not None:
        tracker.log_metrics(metrics, step)


@overload
def track(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def track(*, run_id_param: str = "run_id") -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def track(
    func: Callable[P, R] | None = None, /, *, run_id_param: str = "run_id"
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: run the function inside a tracked MLflow run (see :func:`tracking`).

    A parameter named ``run_id_param`` holding a run id makes the call resume that run.
    """

    def decorate(inner: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(inner)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            resolved = bound_arguments(inner, args, kwargs)
            with tracking(
                inner.__name__,
                resolved,
                run_id=_run_id_argument(resolved, run_id_param),
                source=inner,
            ) as tracker:
                result = inner(*args, **kwargs)
                log_returned_metrics(tracker, result)
                return result

        return wrapper

    return decorate(func) if func is not None else decorate


def _run_id_argument(resolved: Mapping[str, JSON], name: str) -> str | None:
    value = resolved.get(name)
    return value if isinstance(value, str) and value else None


def log_returned_metrics(tracker: Tracker, result: object) -> None:
    """A returned mapping of numbers (``{"val_acc": 0.93}``) is logged as final metrics."""
    if isinstance(result, Mapping):
        items = dict(result)  # pyright: ignore[reportUnknownArgumentType,reportUnknownVariableType]
        numbers = {
            str(k): float(v)  # pyright: ignore[reportUnknownArgumentType]
            for k, v in items.items()  # pyright: ignore[reportUnknownVariableType]
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if numbers:
            tracker.log_metrics(numbers, tracker.last_step)


@contextlib.contextmanager
def tracking(
    entry: str,
    args: Mapping[str, JSON],
    *,
    env: Mapping[str, str] | None = None,
    run_id: str | None = None,
    source: Callable[..., Any] | None = None,
) -> Generator[Tracker]:
    """Track the block as one attempt of a run; see the module docstring for what is logged."""
    environ = os.environ if env is None else env
    context = job_context(environ)
    if run_id is not None:
        context = _with_run_id(context, run_id)
    config = TrackConfig.from_environ(environ, Path.cwd())
    redact = Redactor.from_environ(environ)
    attempt_dir = config.log_dir / _run_key(context) / f"attempt-{context.attempt}"
    tracker = Tracker(
        context=context, config=config, attempt=context.attempt, attempt_dir=attempt_dir
    )
    with contextlib.ExitStack() as stack:
        if context.is_rank_zero:
            stack.enter_context(_mlflow_client_env())
            _open_run(tracker, entry, args, redact, source)
        stack.enter_context(_captured_logs(tracker, redact))
        token = _current.set(tracker)
        stack.callback(_current.reset, token)
        stack.enter_context(terminate_on_sigterm())
        status, failure = "FAILED", ""
        try:
            yield tracker
            status = "FINISHED"
        except RequeueRequested:
            status = "SCHEDULED"
            raise
        except (Terminated, KeyboardInterrupt, StopRequested):
            status = "KILLED"
            raise
        except SystemExit as exc:
            status = "FINISHED" if exc.code in (None, 0) else "FAILED"
            raise
        except BaseException:
            # Python prints the traceback only after the capture has ended; keep it in the log.
            failure = redact(traceback.format_exc())
            raise
        finally:
            stack.close()  # logs complete and fds restored before the last upload
            if failure:
                with (attempt_dir / f"rank-{context.rank}.err").open("a") as err:
                    err.write(failure)
            _close_run(tracker, status)


def _with_run_id(context: JobContext, run_id: str) -> JobContext:
    from dataclasses import replace

    return replace(context, run_id=run_id)


def _run_key(context: JobContext) -> str:
    """A folder name every rank of an attempt derives alike, without talking to the others."""
    if context.run_id:
        return context.run_id
    if context.job_id:
        return f"job-{context.job_id}"
    return f"local-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


@contextlib.contextmanager
def _mlflow_client_env() -> Generator[None]:
    saved = {k: os.environ.get(k) for k in _MLFLOW_CLIENT_ENV}
    for key, value in _MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _open_run(
    tracker: Tracker,
    entry: str,
    args: Mapping[str, JSON],
    redact: Redactor,
    source: Callable[..., Any] | None,
) -> None:
    config, context = tracker.config, tracker.context
    artifact_root = config.root / EMBEDDED_ARTIFACTS if config.embedded else None
    backend = MlflowBackend(config.tracking_uri, artifact_root)
    params = param_strings({k: redact(str(v)) for k, v in flatten(dict(args)).items()})
    _replay_unsent(backend, config.log_dir / "unsent")
    previous_attempt = 0
    if context.run_id is not None:
        previous_attempt = _check_resumable(backend, context.run_id, params)
        tracker.experiment_id = _experiment_of(backend, context.run_id)
    tracker.attempt = max(context.attempt, previous_attempt + 1)
    writer = RunWriter(backend, run_id=context.run_id, warn=_log.warning)
    tracker.writer = writer
    if context.run_id is None:
        tags, diff_dir = _code_tags(tracker, source)
        tags["blocktrain.entry"] = entry
        create = {"experiment": config.experiment, "run_name": config.run_name, "tags": tags}
        writer.submit(Op("create", create))
        if diff_dir is not None:
            tracker.log_artifacts(diff_dir, "code")
    writer.submit(Op("params", {"items": params}))
    writer.submit(Op("tags", {"items": _attempt_tags(tracker)}))
    writer.submit(Op("status", {"status": "RUNNING"}))
    tracker.log_metrics({"attempt": float(tracker.attempt)}, step=tracker.attempt)
    if writer.wait_run_id(config.start_timeout_s) is not None and tracker.experiment_id is None:
        with contextlib.suppress(Exception):
            tracker.experiment_id = backend.experiment_id(config.experiment)
    where = redact(tracker.run_url or f"a run not created yet ({config.tracking_uri})")
    _announce(f"tracking attempt {tracker.attempt} of {where}")


def _replay_unsent(backend: MlflowBackend, folder: Path) -> None:
    for spill in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        try:
            sent = replay(backend, spill)
        except Exception as exc:  # noqa: BLE001 - left for the next start; the job goes on
            _log.warning("could not send buffered MLflow records in %s yet: %s", spill, exc)
        else:
            _log.warning("sent %d buffered MLflow records from %s", sent, spill)


def _check_resumable(backend: MlflowBackend, run_id: str, params: Mapping[str, str]) -> int:
    """Refuse a resume that would change a logged param; return the run's last attempt."""
    try:
        run = backend.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - classified below
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(
                f"no MLflow run {run_id} at {backend.uri}; check the id or MLFLOW_TRACKING_URI"
            ) from None
        _log.warning("MLflow unreachable, resuming run %s without checking its params", run_id)
        return 0
    logged: dict[str, str] = dict(run.data.params)
    changed = {k: (logged[k], v) for k, v in params.items() if k in logged and logged[k] != v}
    if changed:
        shown = "; ".join(f"{k}: logged {old!r}, now {new!r}" for k, (old, new) in changed.items())
        raise TrackingError(
            f"run {run_id} cannot be resumed with different arguments ({shown}); params are "
            "immutable: resume with the logged values or start a new run"
        )
    try:
        return int(run.data.tags.get(ATTEMPT_TAG, "0"))
    except ValueError:
        return 0


def _experiment_of(backend: MlflowBackend, run_id: str) -> str | None:
    with contextlib.suppress(Exception):
        return str(backend.get_run(run_id).info.experiment_id)
    return None


def _code_tags(
    tracker: Tracker, source: Callable[..., Any] | None
) -> tuple[dict[str, str], Path | None]:
    """Git tags for a new run, and the folder holding the dirty diff if there is one."""
    state = git_state(_source_folder(source))
    tags = git_tags(state)
    if state is None or not state.dirty:
        return tags, None
    code_dir = tracker.attempt_dir.parent / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / "git.diff").write_text(state.diff, encoding="utf-8")
    return tags, code_dir


def _source_folder(source: Callable[..., Any] | None) -> Path:
    if source is not None:
        with contextlib.suppress(TypeError, OSError):
            file = inspect.getsourcefile(inspect.unwrap(source))
            if file:
                return Path(file).resolve().parent
    return Path.cwd()


def _attempt_tags(tracker: Tracker) -> dict[str, str]:
    context = tracker.context
    tags = {
        ATTEMPT_TAG: str(tracker.attempt),
        "host": context.host,
        "world_size": str(context.world_size),
        **system_tags(),
    }
    if context.job_id is not None:
        tags["slurm.job_id"] = context.job_id
    if context.array_index is not None:
        tags["slurm.array_index"] = str(context.array_index)
    return tags


@contextlib.contextmanager
def _captured_logs(tracker: Tracker, redact: Redactor) -> Generator[None]:
    from blocktrain.track.capture import captured

    rank = tracker.context.rank
    folder = tracker.attempt_dir
    folder.mkdir(parents=True, exist_ok=True)
    if tracker.context.is_rank_zero:
        _write_attempt_record(tracker)
        write_local_status(tracker, "RUNNING")
    stop = threading.Event()
    uploader = threading.Thread(
        target=_upload_periodically, args=(tracker, stop), name="blocktrain-logs", daemon=True
    )
    with captured(folder / f"rank-{rank}.out", folder / f"rank-{rank}.err", redact):
        uploader.start()
        try:
            yield
        finally:
            stop.set()
            uploader.join(timeout=5)


def _write_attempt_record(tracker: Tracker) -> None:
    context = tracker.context
    record = {
        "attempt": tracker.attempt,
        "host": context.host,
        "job_id": context.job_id,
        "array_index": context.array_index,
        "world_size": context.world_size,
        "slurm_restart_count": context.restart_count,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tracker.attempt_dir / "attempt.json").write_text(json.dumps(record, indent=2) + "\n")


def _upload_logs(tracker: Tracker, status: str = "RUNNING") -> None:
    if tracker.context.is_rank_zero:
        write_local_status(tracker, status)
    tracker.log_artifacts(tracker.attempt_dir, f"logs/attempt-{tracker.attempt}")


def write_local_status(tracker: Tracker, status: str) -> None:
    """``status.json`` beside the attempts: what slurm-status shows without asking MLflow."""
    record = {
        "run_id": tracker.run_id,
        "attempt": tracker.attempt,
        "status": status,
        "metrics": tracker.latest_metrics,
        "updated": time.time(),
    }
    with contextlib.suppress(OSError):
        write_text_atomic(tracker.attempt_dir.parent / "status.json", json.dumps(record))


def _upload_periodically(tracker: Tracker, stop: threading.Event) -> None:
    while not stop.wait(tracker.config.upload_interval_s):
        _upload_logs(tracker)


def _close_run(tracker: Tracker, status: str) -> None:
    writer = tracker.writer
    if writer is None:
        return
    _upload_logs(tracker, status)
    end = int(time.time() * 1000)
    writer.submit(Op("status", {"status": status, "end_time_ms": end}))
    key = writer.run_id or tracker.attempt_dir.parent.name
    spill = tracker.config.log_dir / "unsent" / f"{key}-attempt-{tracker.attempt}.jsonl"
    left = writer.close(tracker.config.flush_timeout_s, spill)
    _announce(f"run {writer.run_id or '(not created)'} ended {status}")
    if left:
        _log.warning(
            "MLflow stayed unreachable: %d records kept in %s; they are sent at the next start "
            "of any tracked run in this project, or now with: python -m blocktrain.track replay",
            left,
            spill,
        )


def _announce(line: str) -> None:
    """One status line on stderr for people watching the job; rank 0 only, as callers ensure."""
    sys.stderr.write(f"blocktrain: {line}\n")
    sys.stderr.flush()


def param_strings(params: Mapping[str, object]) -> dict[str, str]:
    """MLflow param values: JSON for lists and mappings, cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        out[key] = (
            text if len(text) <= _PARAM_VALUE_LIMIT else text[: _PARAM_VALUE_LIMIT - 3] + "..."
        )
    return out


@contextlib.contextmanager
def terminate_on_sigterm() -> Generator[None]:
    """Turn SIGTERM into :class:`Terminated` in the main thread for the block's duration."""
    from blocktrain import restart

    # In a launched job SIGTERM means preemption: the restart protocol checkpoints instead.
    if threading.current_thread() is not threading.main_thread() or restart.active():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def replay_main(argv: list[str]) -> int:
    """``python -m blocktrain.track replay [FILE ...]``: send records kept during an outage."""
    if not argv or argv[0] != "replay":
        print("usage: python -m blocktrain.track replay [SPILL.jsonl ...]")  # noqa: T201
        return 2
    config = TrackConfig.from_environ(os.environ, Path.cwd())
    files = [Path(a) for a in argv[1:]] or sorted((config.log_dir / "unsent").glob("*.jsonl"))
    artifact_root = config.root / EMBEDDED_ARTIFACTS if config.embedded else None
    backend = MlflowBackend(config.tracking_uri, artifact_root)
    for file in files:
        print(f"{file}: sent {replay(backend, file)} records")  # noqa: T201
    return 0
