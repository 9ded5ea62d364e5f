"""On a real tracking server, the REST run writer makes the runs MLflow's own client makes: the
same run, tags, params, status, artifact and deletion, read back through MLflow; what it does
not speak is left to MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blocktrain.errors import BlocktrainError
from blocktrain.launch.records import tracking
from blocktrain.track.backend import MlflowBackend
from blocktrain.track.restruns import RestRuns, open_server
from mlflow_service import MlflowServer
from run_writers import make_run, seen

pytestmark = pytest.mark.integration

PARAMS = {f"p{i:03d}": str(i) for i in range(130)}  # more than one request's worth
EXPERIMENT = "restruns"


@pytest.fixture
def store(mlflow_server: MlflowServer, tmp_path: Path) -> MlflowBackend:
    backend = MlflowBackend(mlflow_server.uri)
    backend.experiment_id(EXPERIMENT)
    return backend


@pytest.mark.parametrize("status", ["SCHEDULED", "FAILED"])
def test_a_run_written_over_rest_reads_back_as_mlflows_own(
    store: MlflowBackend, tmp_path: Path, status: str
):
    diff = tmp_path / "git.diff"
    diff.write_text("--- a\n+++ b\n@@ x\n")
    server = open_server(store.uri, EXPERIMENT, {})
    assert isinstance(server, RestRuns)
    by_mlflow = make_run(store, EXPERIMENT, PARAMS, diff, status)
    by_rest = make_run(server, EXPERIMENT, PARAMS, diff, status)
    assert seen(store, by_rest) == seen(store, by_mlflow)
    downloaded = store.client.download_artifacts(by_rest, "code/git.diff", str(tmp_path / "dl"))
    assert Path(downloaded).read_text() == diff.read_text()
    with server.exclusive():
        server.delete_run(by_rest)
    assert store.get_run(by_rest).info.lifecycle_stage == "deleted"


def test_what_the_writer_does_not_speak_goes_to_mlflow(store: MlflowBackend, tmp_path: Path):
    assert open_server(store.uri, "no-such-experiment", {}) is None
    assert open_server(store.uri, EXPERIMENT, {"MLFLOW_TRACKING_AUTH": "plugin"}) is None
    userinfo = store.uri.replace("http://", "http://user:secret@")
    assert open_server(userinfo, EXPERIMENT, {}) is None
    assert isinstance(tracking.writer(store.uri, tmp_path, EXPERIMENT, {}), RestRuns)
    assert isinstance(tracking.writer(store.uri, tmp_path, "new-one", {}), MlflowBackend)


def test_a_refusal_is_one_line_naming_the_server(store: MlflowBackend):
    server = open_server(store.uri, EXPERIMENT, {})
    assert server is not None
    with pytest.raises(BlocktrainError, match=r"refused POST /api/2.0/mlflow/runs/log-batch"):
        server.log_params("0" * 32, {"a": "1"})


def test_a_launch_to_a_server_imports_no_mlflow(store: MlflowBackend, tmp_path: Path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from blocktrain.launch.records import tracking\n"
        f"w = tracking.writer({store.uri!r}, Path('.'), {EXPERIMENT!r}, {{}})\n"
        "run = w.create_run(" + repr(EXPERIMENT) + ", 'n', {})\n"
        "w.set_status(run, 'SCHEDULED', None)\n"
        "print(type(w).__name__, 'mlflow' in sys.modules, run)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    kind, imported, run_id = done.stdout.split()
    assert (kind, imported) == ("RestRuns", "False")
    assert store.get_run(run_id).info.status == "SCHEDULED"
