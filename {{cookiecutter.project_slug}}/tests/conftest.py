"""Each test that tracks runs works in a scratch project folder of its own."""

import os
from pathlib import Path

import pytest

# What a surrounding shell or job may have set that would send runs elsewhere.
FOREIGN = ("MLFLOW_", "BLOCKTRAIN_", "SLURM_", "DATA_")
RANKS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder as the working directory: runs, logs and mlflow.db go there."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "scratch"\nversion = "0"\n')
    for name in list(os.environ):
        if name.startswith(FOREIGN) or name in RANKS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_PATH", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
