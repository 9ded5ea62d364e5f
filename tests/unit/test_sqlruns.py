"""The SQLite run writer makes the runs MLflow's own client makes: the same run, tags, params,
status, artifacts and deletion, read back through MLflow; and it leaves to MLflow every store
it does not know."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from blocktrain.errors import BlocktrainError
from blocktrain.launch.records import tracking
from blocktrain.track.backend import MlflowBackend
from blocktrain.track.sqlruns import KNOWN_REVISIONS, SqliteRuns, open_store
from run_writers import TAGS, make_run, seen

PARAMS = {"lr": "0.1", "model.width": "64", "data.paths": '["a", "b"]'}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database MLflow created (seconds of migrations, once), with the experiment "exp"."""
    root = tmp_path_factory.mktemp("made")
    tracking.backend(f"sqlite:///{root / 'mlflow.db'}", root).experiment_id("exp")
    return root / "mlflow.db"


@pytest.fixture
def store(made: Path, tmp_path: Path) -> MlflowBackend:
    """A copy of that database, its artifacts in this test's folder."""
    database = tmp_path / "mlflow.db"
    shutil.copyfile(made, database)
    with sqlite3.connect(database) as connection:
        connection.execute(
            "update experiments set artifact_location = ? where name = 'exp'",
            ((tmp_path / "mlartifacts" / "exp").as_uri(),),
        )
    return tracking.backend(f"sqlite:///{database}", tmp_path)


def fast(store: MlflowBackend) -> SqliteRuns:
    opened = open_store(store.uri, {})
    assert opened is not None
    return opened


@pytest.mark.parametrize("status", ["SCHEDULED", "RUNNING", "FAILED"])
def test_a_run_written_without_mlflow_reads_back_as_mlflows_own(
    store: MlflowBackend, tmp_path: Path, status: str
):
    diff = tmp_path / "git.diff"
    diff.write_text("--- a\n+++ b\n")
    by_mlflow = make_run(store, "exp", PARAMS, diff, status)
    by_sqlite = make_run(fast(store), "exp", PARAMS, diff, status)

    assert seen(store, by_sqlite) == seen(store, by_mlflow)
    both = store.client.search_runs([store.experiment_id("exp")])
    assert {r.info.run_id for r in both} == {by_mlflow, by_sqlite}
    # The job goes on with MLflow's client: metrics, its end.
    store.log_batch(by_sqlite, [("loss", 0.5, 1, 3)], {}, {"blocktrain.attempt": "1"})
    store.set_status(by_sqlite, "FINISHED", None)
    ended = store.get_run(by_sqlite)
    assert (ended.info.status, ended.data.metrics) == ("FINISHED", {"loss": 0.5})


def test_a_deleted_run_is_deleted_as_mlflow_deletes_it(store: MlflowBackend, tmp_path: Path):
    diff = tmp_path / "git.diff"
    diff.write_text("x")
    writer = fast(store)
    kept, gone = (
        make_run(writer, "exp", PARAMS, diff, "SCHEDULED"),
        make_run(writer, "exp", PARAMS, diff, "SCHEDULED"),
    )
    with writer.exclusive():
        writer.delete_run(gone)
    assert store.get_run(gone).info.lifecycle_stage == "deleted"
    found = store.client.search_runs([store.experiment_id("exp")])
    assert [r.info.run_id for r in found] == [kept]
    store.client.restore_run(gone)  # MLflow's own undo works on it
    assert store.get_run(gone).info.lifecycle_stage == "active"


def test_a_failed_block_leaves_no_row_and_no_artifact(store: MlflowBackend, tmp_path: Path):
    diff = tmp_path / "git.diff"
    diff.write_text("x")
    writer = fast(store)
    artifacts = tmp_path / "mlartifacts" / "exp"
    before = sorted(artifacts.rglob("*")) if artifacts.exists() else []

    def doomed() -> None:
        with writer.exclusive():
            run_id = writer.create_run("exp", "doomed", TAGS)
            writer.log_params(run_id, PARAMS)
            writer.log_artifact(run_id, diff, "code")
            raise RuntimeError("submission failed")

    with pytest.raises(RuntimeError, match="submission failed"):
        doomed()
    assert store.client.search_runs([store.experiment_id("exp")]) == []
    assert (sorted(artifacts.rglob("*")) if artifacts.exists() else []) == before


def test_names_and_values_mlflow_refuses_are_refused_before_any_row(store: MlflowBackend):
    writer = fast(store)

    def launch(params: dict[str, str]) -> None:
        with writer.exclusive():
            writer.log_params(writer.create_run("exp", "bad", {}), params)

    with pytest.raises(BlocktrainError, match=r"param name '\.\./up'"):
        launch({"../up": "1"})
    with pytest.raises(BlocktrainError, match="7000 characters long"):
        launch({"long": "x" * 7000})
    assert store.client.search_runs([store.experiment_id("exp")]) == []


def test_the_installed_mlflow_schema_is_one_the_writer_knows(store: MlflowBackend):
    from mlflow.store.db.utils import _get_alembic_config  # pyright: ignore[reportPrivateUsage]

    assert store.uri.startswith("sqlite:///")
    database = Path(store.uri.removeprefix("sqlite:///"))
    with sqlite3.connect(database) as connection:
        [(revision,)] = connection.execute("select version_num from alembic_version").fetchall()
    assert revision in KNOWN_REVISIONS
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(_get_alembic_config(store.uri)).get_heads()
    assert set(heads) <= KNOWN_REVISIONS


def test_stores_it_does_not_know_are_left_to_mlflow(store: MlflowBackend, tmp_path: Path):
    assert open_store(f"sqlite:///{tmp_path / 'absent.db'}", {}) is None
    assert open_store("http://localhost:5000", {}) is None
    assert open_store(store.uri, {"MLFLOW_WORKSPACE": "team"}) is None
    root = tmp_path
    assert isinstance(tracking.writer(store.uri, root, "exp", {}), SqliteRuns)
    # An experiment not yet made: MLflow makes it.
    assert isinstance(tracking.writer(store.uri, root, "new", {}), MlflowBackend)
    database = Path(store.uri.removeprefix("sqlite:///"))
    with sqlite3.connect(database) as connection:
        connection.execute("update alembic_version set version_num = 'f00dfeed0000'")
    assert open_store(store.uri, {}) is None


def test_a_launch_into_a_known_store_imports_no_mlflow(store: MlflowBackend, tmp_path: Path):
    """The point of the writer: mlflow stays out of the launching process."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from blocktrain.launch.records import tracking\n"
        f"w = tracking.writer({store.uri!r}, Path({str(tmp_path)!r}), 'exp', {{}})\n"
        "with w.exclusive():\n"
        "    run = w.create_run('exp', 'n', {})\n"
        "    w.set_status(run, 'SCHEDULED', None)\n"
        "print(type(w).__name__, 'mlflow' in sys.modules, 'sqlalchemy' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["SqliteRuns", "False", "False"]
