"""Fixtures of the unit tests of the launch flow: a project, and its embedded MLflow store."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launchkit import ENTRY_SOURCE, MODULE, PROFILE

from blocktrain.track.backend import EMBEDDED_DB, MlflowBackend


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A project with an entry module, a profile and an argument file, outside any git repo."""
    project = tmp_path / "proj"
    (project / "slurm").mkdir(parents=True)
    (project / "pyproject.toml").write_text(f'[tool.blocktrain]\nentry-module = "{MODULE}"\n')
    (project / f"{MODULE}.py").write_text(ENTRY_SOURCE)
    (project / "slurm" / "local.yaml").write_text(PROFILE)
    (project / "exp.yaml").write_text("steps: 7\n")
    yield project
    sys.modules.pop(MODULE, None)  # the next test's project holds a module of the same name


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded MLflow database with its tables made: creating them takes seconds."""
    database = tmp_path_factory.mktemp("store") / EMBEDDED_DB
    MlflowBackend(f"sqlite:///{database}")
    return database


@pytest.fixture
def project(root: Path, empty_store: Path) -> Path:
    """The project, with an embedded MLflow store of its own."""
    shutil.copy(empty_store, root / EMBEDDED_DB)
    return root
