"""Dataset statistics logged as params of the tracked run, on a real MLflow server."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocktrain.data.datasets import LazyImageDataset
from blocktrain.data.splits import split_indices
from blocktrain.data.stats import dataset_stats, log_dataset_stats
from blocktrain.track import track
from data_samples import class_folders
from mlflow_service import MlflowServer

pytestmark = pytest.mark.integration


def test_stats_become_params_of_the_tracked_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_server: MlflowServer
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "data-stats")
    monkeypatch.setenv("BLOCKTRAIN_LOG_DIR", str(tmp_path / "logs"))
    for name in ("BLOCKTRAIN_RUN_ID", "RANK", "SLURM_PROCID", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    class_folders(tmp_path / "animals", per_class=5)

    @track
    def prepare(source: str) -> dict[str, str]:
        dataset = LazyImageDataset(source)
        splits = split_indices(dataset.keys, {"train": 60, "val": 20, "test": 20})
        return log_dataset_stats(dataset_stats(dataset, splits))

    logged = prepare(str(tmp_path / "animals"))
    client = mlflow_server.client()
    experiment = client.get_experiment_by_name("data-stats")
    (run,) = client.search_runs([experiment.experiment_id])
    params = run.data.params
    assert {key: params[key] for key in logged} == logged
    assert params["data.train.count"] == "9"
    assert params["data.val.count"] == "3"
    assert params["data.num_classes"] == "3"
    assert sum(int(params[f"data.train.class.{c}"]) for c in ("cat", "dog", "eel")) == 9
    assert params["data.mean"].startswith("[0.")
