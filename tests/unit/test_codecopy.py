"""The frozen code copy holds the project's code and none of its state."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from blocktrain.launch.codecopy import freeze_code, project_files


@pytest.fixture(params=["git", "plain"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "model.py").write_text("X = 1\n")
    (root / "train.py").write_text("import pkg\n")
    (root / "pyproject.toml").write_text("[project]\n")
    for state in ("mlflow.db", "mlflow.db-journal", "mlflow.db-wal", "mlflow.db.lock"):
        (root / state).write_text("sqlite")
    (root / "mlartifacts" / "exp").mkdir(parents=True)
    (root / "mlartifacts" / "exp" / "diff").write_text("d")
    (root / ".blocktrain" / "runs").mkdir(parents=True)
    (root / ".blocktrain" / "runs" / "x").write_text("r")
    if request.param == "git":
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def test_the_copy_holds_the_code_and_no_store_or_state(project: Path, tmp_path: Path):
    assert sorted(str(p) for p in project_files(project)) == [
        "pyproject.toml", "src/pkg/model.py", "train.py",
    ]  # fmt: skip
    count = freeze_code(project, tmp_path / "code")
    assert count == 3
    assert (tmp_path / "code" / "src" / "pkg" / "model.py").read_text() == "X = 1\n"


def test_a_file_gone_between_listing_and_copying_is_left_out(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Another process's temporary file, listed and then removed, does not fail the launch."""
    transient = project / "notes.tmp"
    transient.write_text("x")
    from blocktrain.launch import codecopy

    listed = codecopy.project_files(project)
    assert Path("notes.tmp") in listed
    transient.unlink()
    monkeypatch.setattr(codecopy, "project_files", lambda _root: listed)
    assert freeze_code(project, tmp_path / "code") == 3
    assert not (tmp_path / "code" / "notes.tmp").exists()
