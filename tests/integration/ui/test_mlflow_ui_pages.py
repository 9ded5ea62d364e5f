"""The MLflow UI in a real browser (headless Chromium), on the server the lab's sweep ran on:
the runs page nests the sweep's runs under its parent run, a run's page shows its parent, tags,
system metrics, registered version, metric charts and attempts table, and the registered
version's page shows the run's metrics and origin.

The UI is a single-page app (MLflow 3.17): its pages are ``#/experiments/ID/runs``,
``#/experiments/ID/runs/RUN_ID`` (``/model-metrics``: the charts) and
``#/models/NAME/versions/N``; ``workflowType=machine_learning`` picks its model-training
navigation. The screenshots go to ``$BLOCKTRAIN_UI_SCREENSHOTS`` (default: a folder under
pytest's temporary folder), printed by each test; docs/images holds copies of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from lab_project import MODEL, Lab
from ui_browser import Chromium

pytestmark = pytest.mark.integration
ML = "?workflowType=machine_learning"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("BLOCKTRAIN_UI_SCREENSHOTS")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("mlflow-ui-screenshots")


@pytest.fixture(scope="module")
def browser(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """Chromium whose profile keeps what a user would have chosen on the runs page: the
    sweep's parent run expanded, the swept param and validation metrics as columns; and the
    assistant's panel closed."""
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    view = {
        "runsExpanded": {lab.parent_id: True},
        "selectedColumns": ["params.`lr`", "metrics.`val_accuracy`", "metrics.`val_loss`"],
        "columnOrder": ["attributes.`Run Name`"],
        "columnWidths": {"attributes.`Run Name`": 230},
    }
    page = f'MLflowLocalStorage-1.1-ExperimentPage-["{lab.experiment_id}"]-ReactComponentState'
    chromium.keep_local_storage(
        lab.uri,
        {
            page: json.dumps(view),
            "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
            "mlflow.assistant.panelOpen_v1": "false",
        },
    )
    return chromium


def names(lab: Lab) -> tuple[str, list[str]]:
    """The parent run's name and its runs' names, from the server."""
    client = lab.client()
    return client.get_run(lab.parent_id).info.run_name, [
        client.get_run(run_id).info.run_name for run_id in lab.run_ids
    ]


def test_the_runs_page_nests_the_sweeps_runs_under_their_parent(
    lab: Lab, browser: Chromium, shots: Path, tmp_path: Path
) -> None:
    parent, children = names(lab)
    url = f"{lab.uri}/#/experiments/{lab.experiment_id}/runs{ML}"
    text = browser.capture(url, shots / "mlflow-ui-sweep.png")
    print(f"screenshots of the MLflow UI: {shots}")
    assert parent == "train-lr-sweep"
    assert sorted(children) == ["train-lr-sweep-lr=0.05", "train-lr-sweep-lr=0.2"]
    # The parent's row first, its runs after it (the newest first), then the run count.
    rows = [text.index(f"{name} ") for name in (parent, *reversed(children))]
    assert rows == sorted(rows), text
    assert "3 matching runs" in text
    # Collapsed, as a new visitor sees it: the runs hide under their parent's row.
    collapsed = Chromium(tmp_path / "fresh-profile").text(url)
    assert f"{parent} " in collapsed
    assert not any(name in collapsed for name in children), collapsed


def test_a_runs_page_shows_its_parent_tags_system_metrics_and_version(
    lab: Lab, browser: Chromium, shots: Path
) -> None:
    parent, children = names(lab)
    run_url = f"{lab.uri}/#/experiments/{lab.experiment_id}/runs/{lab.run_ids[0]}"
    text = browser.capture(f"{run_url}{ML}", shots / "mlflow-ui-run.png")
    print(f"screenshots of the MLflow UI: {shots}")
    assert text.startswith(f"Run {lab.run_ids[0]} - MLflow"), text[:200]
    assert f"Parent run {parent} " in text
    assert "Status Finished" in text
    assert "system/cpu_utilization_percentage" in text
    assert "val_accuracy" in text
    assert "blocktrain.entry : dashboard_entry:train" in text
    version = lab.client().search_model_versions(f"run_id='{lab.run_ids[0]}'")[0].version
    assert f"Registered models {MODEL} v{version}" in text
    charts = browser.capture(f"{run_url}/model-metrics{ML}", shots / "mlflow-ui-charts.png")
    assert f"{children[0]} Overview Model metrics System metrics" in charts
    assert "Model metrics (" in charts


def test_a_registered_versions_page_shows_the_runs_metrics_and_origin(
    lab: Lab, browser: Chromium, shots: Path
) -> None:
    client = lab.client()
    version = client.search_model_versions(f"run_id='{lab.run_ids[0]}'")[0]
    run = client.get_run(lab.run_ids[0])
    url = f"{lab.uri}/#/models/{MODEL}/versions/{version.version}{ML}"
    text = browser.capture(url, shots / "mlflow-ui-model-version.png")
    print(f"screenshots of the MLflow UI: {shots}")
    assert f"Registered Models {MODEL} Version {version.version} " in text
    assert f"Source Run : {run.info.run_name} " in text
    assert f"of run {run.info.run_name} ( {lab.run_ids[0]} )" in text
    assert f"val_accuracy {run.data.metrics['val_accuracy']:.6g} " in text
    assert f"run_id {lab.run_ids[0]} " in text


def test_a_runs_artifacts_show_its_attempts_as_a_table(
    lab: Lab, browser: Chromium, shots: Path
) -> None:
    run_url = f"{lab.uri}/#/experiments/{lab.experiment_id}/runs/{lab.run_ids[0]}"
    url = f"{run_url}/artifacts/attempts.csv{ML}"
    text = browser.capture(url, shots / "mlflow-ui-attempts.png")
    print(f"screenshots of the MLflow UI: {shots}")
    assert "attempts.csv" in text
    assert "attempt job_id started ended cause nodes duration_s" in text, text[-3000:]
    assert " finished " in text
