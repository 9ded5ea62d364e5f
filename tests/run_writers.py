"""What the run-writer tests share: one launch's calls on a writer, and what MLflow reads
back of the run they made, so that a writer's runs compare with MLflow's client's own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blocktrain.launch.records import tracking
from blocktrain.track.backend import MlflowBackend

TAGS = {"blocktrain.entry": "m:train", "mlflow.user": "ada", "git.commit": "abc"}


def make_run(
    writer: tracking.RunWriter,
    experiment: str,
    params: Mapping[str, str],
    diff: Path,
    status: str,
) -> str:
    """The calls a launch makes for one run: create, params, the git diff, its status."""
    with writer.exclusive():
        run_id = writer.create_run(experiment, "train-exp", TAGS)
        writer.log_params(run_id, params)
        writer.log_artifact(run_id, diff, "code")
        writer.set_status(run_id, status, None)
    return run_id


def seen(store: MlflowBackend, run_id: str) -> dict[str, Any]:
    """What MLflow reads back of a run, but for what differs between any two runs."""
    run = store.get_run(run_id)
    info = run.info
    artifacts = store.client.list_artifacts(run_id, "code")
    return {
        "name": info.run_name,
        "status": info.status,
        "user": info.user_id,
        "stage": info.lifecycle_stage,
        "experiment": info.experiment_id,
        "ended": info.end_time is not None,
        "artifact_uri": info.artifact_uri.replace(run_id, "RUN"),
        "tags": run.data.tags,
        "params": run.data.params,
        "artifacts": [(a.path, a.file_size) for a in artifacts],
    }
