"""The MLflow annotator against a real tracking server and against the embedded SQLite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tracked_jobs

from blocktrain.core.paths import Layout, LogFiles, unsent_dir
from blocktrain.errors import RequeueRequested, StopRequested, TrackingError
from blocktrain.track import current, log_metrics, track
from mlflow_service import MlflowServer

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture
def tracked_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_server: MlflowServer
) -> Path:
    """Point tracking at the session server and keep local logs in the test's folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    monkeypatch.setenv("BLOCKTRAIN_LOG_DIR", str(tmp_path / "logs"))
    for name in (
        "BLOCKTRAIN_RUN_ID",
        "RANK",
        "SLURM_PROCID",
        "SLURM_JOB_ID",
        "SLURM_RESTART_COUNT",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "logs"


def only_run(client, experiment: str = "tests", after_ms: int = 0):
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.start_time >= after_ms]
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def artifact_text(client, run_id: str, path: str, tmp_path: Path) -> str:
    local = client.download_artifacts(run_id, path, str(tmp_path))
    return Path(local).read_text()


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def run_job(name: str, logs: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a tracked function in a child process, as a job would, with this test's environment."""
    return subprocess.run(
        [sys.executable, str(HERE / "tracked_jobs.py"), name, json.dumps(kwargs)],
        capture_output=True, text=True, timeout=300, cwd=logs.parent, check=False,
    )  # fmt: skip


def test_run_logs_params_tags_metrics_logs_and_finishes(
    tracked_env: Path, mlflow_server: MlflowServer, tmp_path: Path
):
    start = int(time.time() * 1000) - 1
    done = run_job("train", tracked_env, epochs=3, note="hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [
        "epoch 0 note=hello",
        "epoch 1 note=hello",
        "epoch 2 note=hello",
    ]
    client = mlflow_server.client()
    run = only_run(client, after_ms=start)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"epochs": "3", "lr": "0.1", "note": "hello"}
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == git("rev-parse", "HEAD")
    assert tags["blocktrain.git.dirty"] == str(bool(git("status", "--porcelain"))).lower()
    assert tags["blocktrain.attempt"] == "1"
    assert tags["blocktrain.entry"] == "train"
    for key in ("host", "sys.python", "sys.torch", "sys.cuda", "sys.cpu_count", "sys.memory_gib"):
        assert tags[key]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert run.data.metrics["val_acc"] == 0.75
    out = artifact_text(client, run.info.run_id, "logs/attempt-1/rank-0.out", tmp_path)
    assert out.splitlines() == ["epoch 0 note=hello", "epoch 1 note=hello", "epoch 2 note=hello"]
    err = artifact_text(client, run.info.run_id, "logs/attempt-1/rank-0.err", tmp_path)
    assert "training done" in err


def test_crash_marks_the_run_failed_and_keeps_the_traceback(
    tracked_env: Path, mlflow_server: MlflowServer, tmp_path: Path
):
    start = int(time.time() * 1000) - 1
    done = run_job("crash", tracked_env, message="kaboom")
    assert done.returncode == 1
    assert done.stderr.count("ValueError: kaboom") == 1  # printed once, by Python, not by us
    client = mlflow_server.client()
    run = only_run(client, after_ms=start)
    assert run.info.status == "FAILED"
    err = artifact_text(client, run.info.run_id, "logs/attempt-1/rank-0.err", tmp_path)
    assert "Traceback" in err
    assert "ValueError: kaboom" in err
    out = artifact_text(client, run.info.run_id, "logs/attempt-1/rank-0.out", tmp_path)
    assert out == "about to fail\n"


def test_crash_in_process_keeps_the_traceback(
    tracked_env: Path, mlflow_server: MlflowServer, tmp_path: Path
):
    start = int(time.time() * 1000) - 1
    with pytest.raises(ValueError, match="inside"):
        tracked_jobs.crash(message="inside")
    client = mlflow_server.client()
    run = only_run(client, after_ms=start)
    assert run.info.status == "FAILED"
    assert "ValueError: inside" in artifact_text(
        client, run.info.run_id, "logs/attempt-1/rank-0.err", tmp_path
    )


def test_sigterm_marks_the_run_killed(tracked_env: Path, mlflow_server: MlflowServer):
    child = subprocess.Popen(
        [sys.executable, str(HERE / "tracked_jobs.py"), "sleeper"],
        stdout=subprocess.PIPE, text=True, cwd=tracked_env.parent,
    )  # fmt: skip
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("RUN_ID="), line
    run_id = line.strip().split("=", 1)[1]
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) != 0
    run = mlflow_server.client().get_run(run_id)
    assert run.info.status == "KILLED"


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (RequeueRequested("timeout"), "SCHEDULED"),
        (StopRequested("stopped by slurm-stop"), "KILLED"),
        (SystemExit(0), "FINISHED"),
        (SystemExit(3), "FAILED"),
    ],
    ids=["requeue", "stop", "exit-0", "exit-3"],
)
def test_each_ending_sets_the_run_status_locally_and_in_mlflow(
    tracked_env: Path, mlflow_server: MlflowServer, raised: BaseException, status: str
):
    @track
    def ends() -> None:
        """End the way the test asks."""
        print("working")
        raise raised

    start = int(time.time() * 1000) - 1
    with pytest.raises(type(raised)):
        ends()
    run = only_run(mlflow_server.client(), after_ms=start)
    assert run.info.status == status
    (logs,) = [LogFiles(folder) for folder in tracked_env.iterdir()]
    assert json.loads(logs.status.read_text())["status"] == status
    # Only a crash keeps its traceback; an exit or a checkpointed stop has none worth keeping.
    assert "Traceback" not in (logs.attempt(1) / "rank-0.err").read_text()


def test_resume_by_run_id_appends_a_new_attempt(
    tracked_env: Path, mlflow_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    start = int(time.time() * 1000) - 1
    tracked_jobs.train(epochs=1, note="first")
    client = mlflow_server.client()
    run_id = only_run(client, after_ms=start).info.run_id
    monkeypatch.setenv("BLOCKTRAIN_RUN_ID", run_id)
    tracked_jobs.train(epochs=1, note="first")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["blocktrain.attempt"] == "2"
    assert [m.value for m in client.get_metric_history(run_id, "attempt")] == [1.0, 2.0]
    listing = {a.path for a in client.list_artifacts(run_id, "logs")}
    assert listing == {"logs/attempt-1", "logs/attempt-2"}
    assert only_run(client, after_ms=start).info.run_id == run_id  # no second run


def test_resume_with_a_changed_param_is_refused_before_running(
    tracked_env: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
):
    start = int(time.time() * 1000) - 1
    tracked_jobs.train(epochs=1, lr=0.1)
    client = mlflow_server.client()
    run_id = only_run(client, after_ms=start).info.run_id
    monkeypatch.setenv("BLOCKTRAIN_RUN_ID", run_id)
    with pytest.raises(TrackingError, match=r"lr: logged '0.1', now '0.5'.*immutable"):
        tracked_jobs.train(epochs=1, lr=0.5)
    run = client.get_run(run_id)
    assert run.data.params["lr"] == "0.1"
    assert run.data.tags["blocktrain.attempt"] == "1"


def test_resume_of_an_unknown_run_is_a_clear_error(
    tracked_env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("BLOCKTRAIN_RUN_ID", "0" * 32)
    with pytest.raises(TrackingError, match=r"no MLflow run 0{32}"):
        tracked_jobs.train(epochs=1)


def test_run_id_argument_resumes_that_run(tracked_env: Path, mlflow_server: MlflowServer):
    @track
    def evaluate(run_id: str, split: str = "test") -> dict[str, float]:
        """Evaluate a run."""
        return {"test_acc": 0.5}

    start = int(time.time() * 1000) - 1
    tracked_jobs.train(epochs=1)
    client = mlflow_server.client()
    run_id = only_run(client, after_ms=start).info.run_id
    evaluate(run_id=run_id)
    run = client.get_run(run_id)
    assert run.data.metrics["test_acc"] == 0.5
    assert run.data.params["split"] == "test"


def test_ranks_other_than_zero_write_nothing_to_mlflow(
    tracked_env: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
):
    start = int(time.time() * 1000) - 1
    tracked_jobs.train(epochs=1)
    client = mlflow_server.client()
    run = only_run(client, after_ms=start)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("BLOCKTRAIN_RUN_ID", run.info.run_id)
    tracked_jobs.train(epochs=2)
    after = client.get_run(run.info.run_id)
    assert after.data.tags == run.data.tags
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 1
    rank_1 = LogFiles(tracked_env / run.info.run_id).attempt(1) / "rank-1.out"
    assert rank_1.exists()
    done = run_job("train", tracked_env, epochs=2)
    assert done.returncode == 0, done.stderr
    assert "epoch 1" in rank_1.read_text()
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 1


def test_logs_are_uploaded_while_the_job_runs(
    tracked_env: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("BLOCKTRAIN_LOG_UPLOAD_SECONDS", "0.3")
    seen: list[str] = []

    @track
    def long_job() -> None:
        """Print, then look for the line in MLflow before finishing."""
        os.write(1, b"early line\n")  # fd 1, as a job writes; pytest replaces sys.stdout
        tracker = current()
        assert tracker is not None
        assert tracker.run_id is not None
        client = mlflow_server.client()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen:
            names = [a.path for a in client.list_artifacts(tracker.run_id, "logs/attempt-1")]
            if "logs/attempt-1/rank-0.out" in names:
                text = artifact_text(client, tracker.run_id, "logs/attempt-1/rank-0.out", tmp_path)
                if "early line" in text:
                    seen.append(text)
            time.sleep(0.2)

    long_job()
    assert seen, "the log was not uploaded while the function was still running"


def test_embedded_sqlite_store_when_no_tracking_uri(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    monkeypatch.chdir(project)
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "BLOCKTRAIN_LOG_DIR",
        "BLOCKTRAIN_RUN_ID",
        "RANK",
    ):
        monkeypatch.delenv(name, raising=False)
    tracked_jobs.train(epochs=2)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    run = only_run(client, experiment="project")
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri is not None
    assert run.info.artifact_uri.startswith((project / "mlartifacts").as_uri())
    assert (project / "mlartifacts").is_dir()
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
    assert Layout(project).logs.is_dir()


def _steady_job(
    steps: int,
    pause_s: float,
    at_step: dict[int, threading.Event],
    done_events: dict[int, threading.Event],
):
    @track
    def steady() -> None:
        """Log one metric per step; pause at chosen steps until the test says go."""
        for step in range(steps):
            if step in at_step:
                at_step[step].set()
                assert done_events[step].wait(120)
            log_metrics({"x": float(step)}, step=step)
            time.sleep(pause_s)

    return steady


def test_server_down_mid_run_loses_no_metric(
    own_mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    own_mlflow_server.up()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", own_mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "outage")
    monkeypatch.setenv("BLOCKTRAIN_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("BLOCKTRAIN_MLFLOW_FLUSH_SECONDS", "60")
    reached = {10: threading.Event(), 20: threading.Event()}
    go = {10: threading.Event(), 20: threading.Event()}
    job = _steady_job(30, 0.01, reached, go)
    worker = threading.Thread(target=job)
    # The tracked function runs in a thread here, so it cannot install its SIGTERM handler; that
    # part is covered by test_sigterm_marks_the_run_killed.
    worker.start()
    assert reached[10].wait(60)
    own_mlflow_server.down()
    go[10].set()
    assert reached[20].wait(60)
    time.sleep(1)  # metrics 10..19 pile up against a dead server
    own_mlflow_server.up()
    go[20].set()
    worker.join(timeout=180)
    assert not worker.is_alive()
    run = only_run(own_mlflow_server.client(), experiment="outage")
    history = own_mlflow_server.client().get_metric_history(run.info.run_id, "x")
    assert sorted(int(m.step) for m in history) == list(range(30))
    assert run.info.status == "FINISHED"


def test_server_down_at_start_then_up_loses_nothing(
    own_mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    uri = own_mlflow_server.uri  # a free port nobody listens on yet
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "late")
    monkeypatch.setenv("BLOCKTRAIN_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("BLOCKTRAIN_MLFLOW_START_SECONDS", "1")
    monkeypatch.setenv("BLOCKTRAIN_MLFLOW_FLUSH_SECONDS", "90")
    reached = {5: threading.Event()}
    go = {5: threading.Event()}
    job = _steady_job(10, 0.01, reached, go)
    started = time.monotonic()
    worker = threading.Thread(target=job)
    worker.start()
    assert reached[5].wait(60)
    assert time.monotonic() - started < 15  # the job went on without the server
    own_mlflow_server.up()
    go[5].set()
    worker.join(timeout=180)
    run = only_run(own_mlflow_server.client(), experiment="late")
    history = own_mlflow_server.client().get_metric_history(run.info.run_id, "x")
    assert sorted(int(m.step) for m in history) == list(range(10))
    assert run.info.status == "FINISHED"
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_server_down_for_the_whole_run_spills_then_replays(
    own_mlflow_server: MlflowServer, tmp_path: Path
):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": own_mlflow_server.uri,
        "MLFLOW_EXPERIMENT_NAME": "spilled",
        "BLOCKTRAIN_LOG_DIR": str(tmp_path / "logs"),
        "BLOCKTRAIN_MLFLOW_START_SECONDS": "1",
        "BLOCKTRAIN_MLFLOW_FLUSH_SECONDS": "1",
    }
    env.pop("BLOCKTRAIN_RUN_ID", None)
    done = subprocess.run(
        [sys.executable, str(HERE / "tracked_jobs.py"), "train"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "records kept in" in done.stderr
    spills = list(unsent_dir(tmp_path / "logs").glob("*.jsonl"))
    assert len(spills) == 1
    own_mlflow_server.up()
    replayed = subprocess.run(
        [sys.executable, "-m", "blocktrain.track", "replay"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    client = own_mlflow_server.client()
    run = only_run(client, experiment="spilled")
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
    assert run.data.params["epochs"] == "3"
    assert not spills[0].exists()
    assert "epoch 2" in artifact_text(
        client, run.info.run_id, "logs/attempt-1/rank-0.out", tmp_path / "dl"
    )


def test_ending_a_run_on_a_server_writes_nothing_on_stdout(
    mlflow_server: MlflowServer, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """MLflow prints the run's URL when it ends a run on a server; in `slurm-status --json` (a
    local job whose supervisor died is ended there) that line broke the JSON."""
    from blocktrain.track.backend import MlflowBackend

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    store = MlflowBackend(mlflow_server.uri)
    experiment = store.client.create_experiment(f"quiet-{time.time_ns()}")
    run_id = store.client.create_run(experiment).info.run_id
    capfd.readouterr()

    store.set_status(run_id, "KILLED", None)

    assert capfd.readouterr().out == ""
    assert store.get_run(run_id).info.status == "KILLED"
