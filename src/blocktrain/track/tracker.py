"""The handle user code logs through: :class:`Tracker`, :func:`current`, :func:`log_metrics`,
:func:`nest_under`.

Owns where a run is tracked (:class:`TrackConfig`, read from the environment) and which tracker
is current in this context. Logging only queues records on the run's writer; opening and
closing the run belong to :mod:`blocktrain.track.lifecycle`.

Must not: import mlflow, block the caller, or write to MLflow from ranks other than 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from blocktrain.core import envvars
from blocktrain.core.jobenv import JobContext
from blocktrain.core.paths import Layout, LogFiles, project_root
from blocktrain.core.values import env_seconds
from blocktrain.errors import TrackingError
from blocktrain.track.backend import PARAM_VALUE_LIMIT, run_url, tracking_uri
from blocktrain.track.writer import Op, RunWriter

_log = logging.getLogger("blocktrain.track")
_current: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
    "blocktrain_tracker", default=None
)
PARENT_TAG = "mlflow.parentRunId"
"""The tag that nests a run under another in the MLflow UI."""
MODEL_TAG = "blocktrain.model"
"""The registered model version (``models:/NAME/VERSION``) that a run read."""


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
    system_metrics_interval_s: float = 10.0
    """Seconds between system metric samples (:mod:`blocktrain.track.sysmetrics`); 0: none."""
    run_dir: Path | None = None
    """The launched run's folder (``BLOCKTRAIN_RUN_DIR``), where restarts.json is kept."""
    nodes: str | None = None
    """The nodes of the attempt's job (``SLURM_JOB_NODELIST``)."""

    def __post_init__(self) -> None:
        for name in ("upload_interval_s", "flush_timeout_s", "start_timeout_s"):
            if not getattr(self, name) > 0:
                raise TrackingError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.system_metrics_interval_s >= 0:
            raise TrackingError(
                f"{envvars.SYSTEM_METRICS_INTERVAL_S.name} must be 0 (off) or a positive number "
                f"of seconds, got {self.system_metrics_interval_s}"
            )

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
            log_dir=Path(envvars.LOG_DIR.get(env) or Layout(root).logs),
            run_name=envvars.RUN_NAME.get(env),
            upload_interval_s=env_seconds(
                env, envvars.LOG_UPLOAD_SECONDS.name, 30.0, TrackingError
            ),
            flush_timeout_s=env_seconds(
                env, envvars.MLFLOW_FLUSH_SECONDS.name, 30.0, TrackingError
            ),
            start_timeout_s=env_seconds(
                env, envvars.MLFLOW_START_SECONDS.name, 10.0, TrackingError
            ),
            system_metrics_interval_s=env_seconds(
                env, envvars.SYSTEM_METRICS_INTERVAL_S.name, 10.0, TrackingError
            ),
            run_dir=Path(run_dir) if (run_dir := envvars.RUN_DIR.get(env)) else None,
            nodes=env.get("SLURM_JOB_NODELIST") or None,
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
    logged: dict[str, tuple[int, float]] = field(default_factory=dict[str, tuple[int, float]])
    """The step and value of each metric's latest point in the run, this attempt's or (after a
    resume) an earlier one's: a value already there is not logged again at its step."""

    @property
    def run_id(self) -> str | None:
        return self.writer.run_id if self.writer is not None else self.context.run_id

    @property
    def logs(self) -> LogFiles:
        """The run's log folder, which holds this attempt's folder."""
        return LogFiles(self.attempt_dir.parent)

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
            self.logged.update({k: (step, v) for k, v in finite.items()})
        if self.writer is None or not finite:
            return
        now = int(time.time() * 1000)
        items = [[k, v, now, step or 0] for k, v in finite.items()]
        self.writer.submit(Op("metrics", {"items": items}))

    def note_logged(self, metrics: Mapping[str, float], step: int) -> None:
        """Metrics an earlier attempt logged at ``step`` (a resume's starting point): they count
        as the run's latest values, and are not logged again."""
        self.latest_metrics.update(metrics)
        self.last_step = max(self.last_step, step)
        self.logged.update({k: (step, float(v)) for k, v in metrics.items()})

    def log_side_metrics(
        self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        """Queue metrics about the run rather than its results (system samples, requeue counts):
        unlike :meth:`log_metrics`, they stay out of the latest metrics that status.json and
        the Slack messages show. ``timestamp_ms``: when they were taken, if not now."""
        if self.writer is not None and metrics:
            now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
            items = [[k, float(v), now, step] for k, v in metrics.items()]
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


@contextlib.contextmanager
def made_current(tracker: Tracker) -> Generator[None]:
    """Make ``tracker`` what :func:`current` returns for the block."""
    token = _current.set(tracker)
    try:
        yield
    finally:
        _current.reset(token)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metrics to the current run; a no-op outside a tracked call and on ranks other than 0."""
    tracker = current()
    if tracker is not None:
        tracker.log_metrics(metrics, step)


def nest_under(run_id: str, model: str | None = None) -> None:
    """Show the current run under the run ``run_id`` in the MLflow UI (:data:`PARENT_TAG`),
    naming the registered model version it used (:data:`MODEL_TAG`), if any.

    For a call that reads what a training made (evaluate, predict): its run is then listed
    under the training run. A no-op outside a tracked call, on ranks other than 0, and when
    the current run is ``run_id`` itself (a call that resumed the training run).
    """
    tracker = current()
    if tracker is None or tracker.run_id == run_id:
        return
    tags = {PARENT_TAG: run_id}
    if model is not None:
        tags[MODEL_TAG] = model
    tracker.set_tags(tags)


def param_strings(params: Mapping[str, object]) -> dict[str, str]:
    """MLflow param values: JSON for lists and mappings, cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        out[key] = text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."
    return out
