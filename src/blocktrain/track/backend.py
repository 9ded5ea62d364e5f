"""The MLflow side of the run writer: tracking URI choice and a thin client adapter.

mlflow is imported inside functions only, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocktrain.core.atomic import locked

if TYPE_CHECKING:
    from mlflow import MlflowClient

EMBEDDED_DB = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlartifacts"
ATTEMPT_TAG = "blocktrain.attempt"
"""The run's latest attempt number, set by each attempt as it starts."""
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
ENDED = frozenset({"FINISHED", "FAILED", "KILLED"})
"""The run statuses that end a run: setting one also sets its end time."""
PARAM_VALUE_LIMIT = 6000
"""MLflow's longest param value (``mlflow.utils.validation.MAX_PARAM_VAL_LENGTH``)."""
PARAMS_PER_BATCH = 100
"""The most params one ``log-batch`` request carries (``MAX_PARAMS_TAGS_PER_BATCH``)."""


def tracking_uri(env: Mapping[str, str], project_root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's embedded SQLite store."""
    configured = env.get("MLFLOW_TRACKING_URI", "").strip()
    if configured:
        return configured
    return f"sqlite:///{(project_root / EMBEDDED_DB).resolve()}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """A browser link to the run when the tracking URI is a server."""
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix + ":memory:":
        return None
    return Path(uri.removeprefix(prefix).split("?", 1)[0])


class MlflowBackend:
    """Implements :class:`blocktrain.track.writer.Backend` with an ``MlflowClient``."""

    def __init__(self, uri: str, artifact_root: Path | None = None) -> None:
        from mlflow import MlflowClient

        if uri.startswith("sqlite:"):
            # Creating the embedded store logs a dozen INFO lines (table creation, Alembic
            # migrations) the first time; they would bury the command's own output.
            for name in ("mlflow.store.db.utils", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
        self.uri = uri
        self._artifact_root = artifact_root
        with self.exclusive():
            # Opening the store creates and migrates a new database; two processes doing it at
            # once both run the migrations and one fails, so it happens under the lock.
            self.client: MlflowClient = MlflowClient(tracking_uri=uri)

    @contextlib.contextmanager
    def exclusive(self) -> Generator[None]:
        """Hold the embedded store's lock file: SQLite copes badly with many writers at once.

        A tracking server serialises its own writes; for it this holds nothing.
        """
        database = sqlite_path(self.uri)
        if database is None:
            yield
            return
        with locked(database.with_name(database.name + ".lock")):
            yield

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self._artifact_root is not None:
            location = (self._artifact_root / name).resolve().as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    def create_run(self, experiment: str, run_name: str | None, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id(experiment), run_name=run_name, tags=dict(tags)
        )
        return str(run.info.run_id)

    def log_batch(
        self,
        run_id: str,
        metrics: list[tuple[str, float, int, int]],
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, step) for k, v, ts, step in metrics],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
            synchronous=True,
        )

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = list(params.items())
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.log_batch(run_id, [], dict(items[start : start + PARAMS_PER_BATCH]), {})

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        self.log_artifacts(run_id, str(path), artifact_path)

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        if Path(local_dir).is_file():
            self.client.log_artifact(run_id, local_dir, artifact_path or None)  # pyright: ignore[reportUnknownMemberType]
        else:
            self.client.log_artifacts(run_id, local_dir, artifact_path or None)

    def set_status(self, run_id: str, status: str, end_time_ms: int | None) -> None:
        # MLflow prints the run's URL on stdout when it ends a run on a server: that would land
        # in the middle of `slurm-status --json` or a job's log. The user may still ask for it.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if status in ENDED:
            self.client.set_terminated(run_id, status, end_time=end_time(status, end_time_ms))
        else:
            self.client.update_run(run_id, status=status)

    def get_run(self, run_id: str) -> Any:  # noqa: ANN401 - mlflow.entities.Run, imported lazily
        return self.client.get_run(run_id)

    def latest_steps(self, run_id: str) -> dict[str, int]:
        """Per metric key, the highest step the run holds (one request, whatever the keys)."""
        return latest_steps(self.get_run(run_id))

    def steps_of(self, run_id: str, key: str) -> set[int]:
        """Every step of the run's history of ``key``."""
        return {int(m.step) for m in self.client.get_metric_history(run_id, key)}


def latest_steps(run: Any) -> dict[str, int]:  # noqa: ANN401 - mlflow.entities.Run
    """Per metric key, the highest step ``run`` holds: the step of the point MLflow keeps as the
    key's latest, which it chooses by step first."""
    # RunData.metrics has values only; its message form keeps each latest point's step.
    return {str(m.key): int(m.step) for m in run.data.to_proto().metrics}


def now_ms() -> int:
    return int(time.time() * 1000)


def end_time(status: str, given_ms: int | None) -> int | None:
    """The end time a status change records: the one given, else now for a status in
    :data:`ENDED`, else none."""
    if given_ms:
        return given_ms
    return now_ms() if status in ENDED else None
