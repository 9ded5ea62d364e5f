"""One run, one live job: adversarial order and input at launch, without a cluster.

Concurrent relaunches, a finished run relaunched, run-id prefixes and malformed ids, a secret
typed into ``--name``, an unreachable tracking server, and hostile YAML: each refused with one
line, exit status 2 at the command line, and nothing created.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from launchkit import RecordingScheduler, run

from blocktrain.core import checkpointfiles
from blocktrain.core.paths import Layout
from blocktrain.entry import bounded
from blocktrain.entry.argfiles import load_arg_file
from blocktrain.errors import ArgsError, BlocktrainError
from blocktrain.launch.launcher import LaunchRequest, launch
from blocktrain.launch.records.store import read_record
from blocktrain.launch.slurm.commands import QueueEntry

REPO = Path(__file__).resolve().parents[2]


class SlowScheduler(RecordingScheduler):
    """Submitting takes a while, and a submitted job is queued from then on, as with sbatch."""

    def submit(self, jobs):  # pyright: ignore[reportIncompatibleMethodOverride]
        time.sleep(0.5)
        submitted = super().submit(jobs)
        self.queue.extend(QueueEntry(s.job_id, "PENDING", "0:00", "") for s in submitted)
        return submitted


def test_of_concurrent_relaunches_of_a_stopped_run_exactly_one_submits(project: Path):
    scheduler = SlowScheduler()
    [first] = run(project, scheduler).runs
    scheduler.queue.clear()  # the first job has ended: the run is stopped and resumable
    outcomes: list[str] = []

    def relaunch() -> None:
        try:
            run(project, scheduler, run_id=first.run_id)
            outcomes.append("submitted")
        except BlocktrainError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=relaunch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("submitted") == 1, outcomes
    assert all("still has a job in the queue" in o for o in outcomes if o != "submitted")
    assert len(scheduler.submitted) == 2  # the launch and one relaunch
    assert len(read_record(Layout(project), first.run_id).jobs) == 2


def test_a_finished_run_is_not_rerun(project: Path):
    scheduler = RecordingScheduler()
    [first] = run(project, scheduler).runs
    Layout(project).run(first.run_id).finished_marker.touch()
    with pytest.raises(BlocktrainError, match=r"has finished and is not rerun; start a new run"):
        run(project, scheduler, run_id=first.run_id)
    assert len(scheduler.submitted) == 1


def _checkpoint(folder: Path, step: int, *, good: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpointfiles.checkpoint_path(folder, step)
    path.write_bytes(b"weights %d" % step)
    digest = checkpointfiles.sha256(path) if good else "0" * 64
    checkpointfiles.sidecar_path(path).write_text(f"{digest}  {path.name}\n")


def test_a_run_whose_checkpoints_all_fail_their_checksums_is_not_relaunched(project: Path):
    scheduler = RecordingScheduler()
    [first] = run(project, scheduler).runs
    folder = Layout(project).checkpoints(first.run_id)
    _checkpoint(folder, 40, good=False)
    _checkpoint(folder, 80, good=False)
    with pytest.raises(BlocktrainError) as refused:
        run(project, scheduler, run_id=first.run_id)
    assert str(refused.value).count("\n") == 0
    assert "no checkpoint in" in str(refused.value)
    assert "the newest, step-000000080.pt, does not match the checksum" in str(refused.value)
    assert len(scheduler.submitted) == 1
    assert len(read_record(Layout(project), first.run_id).jobs) == 1

    _checkpoint(folder, 40, good=True)  # one good one: the relaunch resumes from it
    run(project, scheduler, run_id=first.run_id)
    assert len(scheduler.submitted) == 2


def test_run_id_takes_a_unique_prefix_and_refuses_what_is_no_run_id(project: Path):
    scheduler = RecordingScheduler()
    [first] = run(project, scheduler).runs
    result = run(project, scheduler, run_id=first.run_id[:8])
    assert result.relaunched_after is not None
    assert result.runs[0].run_id == first.run_id
    for bad in ("", "x" * 10_000, "../../etc", "abc"):
        with pytest.raises(BlocktrainError) as caught:
            run(project, scheduler, run_id=bad)
        message = str(caught.value)
        assert "\n" not in message, message
        assert len(message) < 300, message
    assert len(scheduler.submitted) == 2


def test_a_secret_typed_into_the_name_is_masked_everywhere(project: Path):
    secret = "s3cr3t-v4lue-0123"
    scheduler = RecordingScheduler()
    result = launch(
        LaunchRequest(entry="train", name=f"try-{secret}"),
        root=project,
        scheduler=scheduler,
        environ={"MY_API_TOKEN": secret},
    )
    [launched] = result.runs
    record = read_record(Layout(project), launched.run_id)
    assert record.name is not None
    assert secret not in record.name
    assert "***" in record.name
    spec = scheduler.submitted[0].specs[0]
    assert secret not in repr(spec)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_tracking_server_is_one_line_and_creates_nothing(project: Path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    scheduler = RecordingScheduler()
    started = time.monotonic()
    with pytest.raises(BlocktrainError, match=r"tracking server http://127.0.0.1:\d+ is unreach"):
        launch(
            LaunchRequest(entry="train"),
            root=project,
            scheduler=scheduler,
            environ={"MLFLOW_TRACKING_URI": uri},
        )
    assert time.monotonic() - started < 10
    layout = Layout(project)
    assert not layout.runs.exists() or not any(layout.runs.iterdir())
    assert not (layout.state / "launches").exists() or not any(
        (layout.state / "launches").iterdir()
    )
    assert scheduler.submitted == []


# --- hostile YAML ----------------------------------------------------------------------------

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (LAUGHS, "more than 200000 values once its aliases are expanded"),
        ("x: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 64 levels"),
        ("lr: 0.1\nname: a\x00b\n", "not YAML text: unacceptable character #x0000"),
        ("a: &a [*a]\n", "an alias refers to a value that contains it"),
        ("tags: " + "x" * (bounded.MAX_VALUE_CHARS + 1) + "\n", "a value of more than"),
    ],
    ids=["billion-laughs", "deep", "nul", "recursive", "long-value"],
)
def test_hostile_argument_files_are_one_line_refusals(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(ArgsError) as caught:
        load_arg_file(path)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert problem in message, message
    assert "\n" not in message
    assert message.startswith(str(path))


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path):
    path = tmp_path / "exp.yaml"
    with path.open("wb") as f:
        f.truncate(bounded.MAX_FILE_BYTES + 1)  # sparse: nothing to read if it is not read
    with pytest.raises(ArgsError, match=r"bytes, more than the \d+ allowed"):
        load_arg_file(path)


def test_an_empty_arguments_file_is_refused(tmp_path: Path):
    path = tmp_path / "exp.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(ArgsError, match="the arguments file is empty"):
        load_arg_file(path)


def test_the_command_line_refuses_hostile_input_with_exit_2(project: Path):
    (project / "laughs.yaml").write_text(LAUGHS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLURM_"))}
    for argv, expected in [
        (["train", "--args", "laughs.yaml"], "aliases are expanded"),
        (["train", "--run-id", ""], "is not a run id"),
        (["train", "--run-id", "f" * 10_000], "is not a run id"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "blocktrain.cli.launch", *argv, "--executor", "local"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert expected in lines[0], done.stderr
    assert not (Layout(project).state / "launches").exists()


def test_a_grid_too_large_is_refused_before_it_is_built(project: Path):
    sweep = project / "huge.yaml"
    sweep.write_text(f"grid:\n  steps: {list(range(200))}\n  lr: {[0.1] * 60}\n")
    started = time.monotonic()
    with pytest.raises(ArgsError, match=r"the grid makes 12000 runs \(200 x 60\), more than"):
        run(project, RecordingScheduler(), sweep=sweep)
    assert time.monotonic() - started < 10


def test_a_launch_of_many_runs_says_how_far_it_got(project: Path):
    sweep = project / "many.yaml"
    sweep.write_text(f"grid:\n  steps: {list(range(1, 251))}\n")
    lines: list[str] = []
    scheduler = RecordingScheduler()
    result = launch(
        LaunchRequest(entry="train", sweep=sweep),
        root=project,
        scheduler=scheduler,
        environ={},
        progress=lines.append,
    )
    assert len(result.runs) == 250
    assert lines[-1] == "creating MLflow runs: 250/250"
    assert "checking arguments: 250/250" in lines
    assert len(lines) == 20  # every tenth of the way, twice
