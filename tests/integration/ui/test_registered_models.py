"""Registered models on a real MLflow server: each training of the lab's sweep registered its
best checkpoint's model as a version of ``blobs``, with its metrics and origin; ``evaluate``
loads a version through ``models:/blobs/N`` and scores exactly as from the run's checkpoint;
a version the registry lacks stops the command with one error line and exit status 2."""

from __future__ import annotations

import json

import pytest
from lab_project import MODEL, Lab

pytestmark = pytest.mark.integration


# Evaluations are runs too: kept out of the lab's experiment, whose page the UI tests show.
ELSEWHERE = {"MLFLOW_EXPERIMENT_NAME": "lab-evaluations"}


def result(stdout: str) -> dict[str, float]:
    [line] = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def test_each_training_registered_a_version_with_its_metrics_and_origin(lab: Lab) -> None:
    client = lab.client()
    versions = {v.run_id: v for v in client.search_model_versions(f"name='{MODEL}'")}
    assert set(versions) == set(lab.run_ids)
    assert sorted(str(v.version) for v in versions.values()) == ["1", "2"]
    commit = lab.command("git", "rev-parse", "HEAD").stdout.strip()
    for run_id, version in versions.items():
        run = client.get_run(run_id)
        assert version.source == f"runs:/{run_id}/model"
        assert version.tags == {"run_id": run_id, "run_name": run.info.run_name,
                                "git_commit": commit}  # fmt: skip
        assert f"of run **{run.info.run_name}** (`{run_id}`)" in version.description
        accuracy = run.data.metrics["val_accuracy"]
        assert f"| val_accuracy | {accuracy:.6g} |" in version.description
        assert "The best checkpoint's weights (step-" in version.description


def test_evaluate_scores_a_version_as_it_scores_the_runs_checkpoint(lab: Lab) -> None:
    version = lab.client().get_model_version(MODEL, "1")
    entry = ["python", "dashboard_entry.py", "evaluate"]
    by_run = lab.command(*entry, "--run-id", version.run_id)  # resumes the training run
    assert by_run.returncode == 0, by_run.stderr[-3000:]
    by_model = lab.command(*entry, "--model", f"models:/{MODEL}/1", env=ELSEWHERE)
    assert by_model.returncode == 0, by_model.stderr[-3000:]
    assert result(by_model.stdout) == result(by_run.stdout)
    assert {"test_accuracy", "test_loss"} <= set(result(by_run.stdout))


def test_a_missing_version_is_one_line_and_exit_status_2(lab: Lab) -> None:
    done = lab.command(
        "python", "dashboard_entry.py", "evaluate", "--model", f"models:/{MODEL}/9", env=ELSEWHERE
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: registered model '{MODEL}' has no version 9 "), line
    assert f"in the MLflow model registry at {lab.uri} (versions: 2, 1); " in line
