"""The launch flow without a cluster: records, frozen code and MLflow runs for real (the
project's embedded SQLite store), Slurm replaced by a scheduler that records what it is asked.

What Slurm makes of a submission is tested on the local cluster (tests/integration/slurm).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from launchkit import ENTRY_SOURCE, MODULE, PROFILE, RecordingScheduler, run

from blocktrain.core.paths import Layout
from blocktrain.errors import ArgsError, BlocktrainError
from blocktrain.launch.launcher import DRY_RUN_ID
from blocktrain.launch.profile import ProfileError, load_profile
from blocktrain.launch.records import tracking
from blocktrain.launch.records.store import read_record
from blocktrain.launch.slurm import batch, finalize
from blocktrain.launch.slurm.commands import QueueEntry
from blocktrain.launch.slurm.submit import BatchJobs, Submitted
from blocktrain.launch.sweeps import parentrun
from blocktrain.track import ATTEMPT_TAG
from blocktrain.track.backend import EMBEDDED_DB


def test_a_launch_freezes_the_code_creates_the_run_and_submits_its_plan(project: Path):
    scheduler = RecordingScheduler()
    result = run(project, scheduler, args=(project / "exp.yaml",))

    layout = Layout(project)
    [launched] = result.runs
    record = read_record(layout, launched.run_id)
    assert (launched.job_id, launched.logs) == ("101", layout.run_logs(record.run_id))
    assert (record.entry, record.args, record.profile) == (
        f"{MODULE}:train",
        {"steps": 7, "lr": 0.1},
        "local",
    )
    assert [(j.job_id, j.kind, j.watcher_id) for j in record.jobs] == [("101", "launch", "151")]
    files = layout.launch(record.launch_id)
    assert (files.code / f"{MODULE}.py").read_text() == ENTRY_SOURCE

    mlflow_run = tracking.backend(record.tracking_uri, project).get_run(record.run_id)
    assert mlflow_run.info.status == "SCHEDULED"
    assert mlflow_run.data.params == {"steps": "7", "lr": "0.1"}
    assert mlflow_run.data.tags["blocktrain.launch_id"] == record.launch_id
    assert mlflow_run.data.tags["blocktrain.code_dir"] == str(files.code)

    [jobs] = scheduler.submitted
    assert jobs.plan == batch.plan(
        load_profile(project, "local"),
        job_name="train",
        folder=files.submitit,
        project_root=project,
        host_python=sys.executable,
        code_paths=[str(files.code)],
        requeue_dir=files.requeue,
    )
    assert files.requeue.is_dir()
    assert (jobs.project_root, jobs.watcher_log) == (project, files.watcher_log)
    [spec] = jobs.specs
    assert (spec.run_id, spec.args, spec.attempt_base) == (record.run_id, record.args, 0)
    assert spec.code_dir == str(files.code)
    assert spec.environment()["BLOCKTRAIN_CHECKPOINT_DIR"] == str(
        layout.run(record.run_id).checkpoints
    )


def test_several_argument_files_are_one_array_of_named_runs_under_a_parent(project: Path):
    (project / "b.yaml").write_text("lr: 0.5\n")
    scheduler = RecordingScheduler()
    result = run(project, scheduler, args=(project / "exp.yaml", project / "b.yaml"), name="abl")

    assert [r.job_id for r in result.runs] == ["101_0", "101_1"]
    [jobs] = scheduler.submitted
    assert [s.run_id for s in jobs.specs] == [r.run_id for r in result.runs]
    layout = Layout(project)
    records = [read_record(layout, r.run_id) for r in result.runs]
    assert [r.args for r in records] == [{"steps": 7, "lr": 0.1}, {"steps": 5, "lr": 0.5}]
    assert [(r.name, r.array_index) for r in records] == [("abl-exp", 0), ("abl-b", 1)]
    assert {r.sweep_id for r in records} == {records[0].launch_id}
    assert [s.environment()["BLOCKTRAIN_RUN_NAME"] for s in jobs.specs] == ["abl-exp", "abl-b"]

    store = tracking.backend(records[0].tracking_uri, project)
    [parent_id] = {r.parent_run_id for r in records}
    assert parent_id is not None
    parent = store.get_run(parent_id)
    assert (parent.info.run_name, parent.info.status) == ("abl", "RUNNING")
    assert parent.data.tags["blocktrain.sweep"] == "true"
    assert parent.data.params == {"sweep.lr": "0.1,0.5", "sweep.steps": "7,5"}
    for record in records:
        child = store.get_run(record.run_id)
        assert child.info.run_name == record.name
        assert child.data.tags["mlflow.parentRunId"] == parent_id


def test_sweep_elements_are_named_after_the_file_and_their_values(project: Path):
    (project / "ablation.yaml").write_text(
        "base: [exp.yaml]\ngrid:\n  lr: [0.01, 0.1]\nbest: {metric: val_loss, mode: min}\n"
    )
    result = run(project, RecordingScheduler(), sweep=project / "ablation.yaml")

    layout = Layout(project)
    records = [read_record(layout, r.run_id) for r in result.runs]
    assert [r.name for r in records] == ["train-ablation-lr=0.01", "train-ablation-lr=0.1"]
    store = tracking.backend(records[0].tracking_uri, project)
    assert [store.get_run(r.run_id).info.run_name for r in records] == [r.name for r in records]
    parent = store.get_run(str(records[0].parent_run_id))
    assert parent.info.run_name == "train-ablation"
    assert parent.data.params == {"sweep.lr": "0.01,0.1"}
    sweep = parentrun.read_record(layout.launch(records[0].launch_id))
    assert sweep is not None
    assert (sweep.best_metric, sweep.best_mode, sweep.swept) == ("val_loss", "min", ["lr"])
    assert [c.values for c in sweep.children] == [{"lr": "0.01"}, {"lr": "0.1"}]


def test_a_single_run_is_named_after_the_entry_and_its_file(project: Path):
    [launched] = run(project, RecordingScheduler(), args=(project / "exp.yaml",)).runs
    record = read_record(Layout(project), launched.run_id)
    store = tracking.backend(record.tracking_uri, project)
    mlflow_run = store.get_run(launched.run_id)
    assert (record.name, mlflow_run.info.run_name) == ("train-exp", "train-exp")
    assert record.parent_run_id is None
    assert "mlflow.parentRunId" not in mlflow_run.data.tags


def test_the_parent_closes_with_a_summary_once_every_run_ended(project: Path, tmp_path: Path):
    (project / "b.yaml").write_text("lr: 0.5\n")
    (project / "c.yaml").write_text("lr: 0.9\n")
    files = tuple(project / n for n in ("exp.yaml", "b.yaml", "c.yaml"))
    result = run(project, RecordingScheduler(), args=files, best="val_loss:min")
    layout = Layout(project)
    records = [read_record(layout, r.run_id) for r in result.runs]
    store = tracking.backend(records[0].tracking_uri, project)
    parent_id = str(records[0].parent_run_id)
    ending = [("FINISHED", 0.4), ("FINISHED", 0.2), ("FAILED", 0.1)]
    for record, (_, loss) in zip(records, ending, strict=True):
        store.client.log_metric(record.run_id, "val_loss", loss, step=3)
        store.client.log_metric(record.run_id, "system/cpu_utilization_percentage", 50.0)
    for record, (status, _) in list(zip(records, ending, strict=True))[:2]:
        store.set_status(record.run_id, status, None)
    finalize.finalize(layout, [records[0].run_id], lambda _: "COMPLETED")
    assert store.get_run(parent_id).info.status == "RUNNING"  # one run is still going

    store.set_status(records[2].run_id, "FAILED", None)
    finalize.finalize(layout, [records[2].run_id], lambda _: "FAILED")
    finalize.finalize(layout, [records[2].run_id], lambda _: "FAILED")  # again: the same result

    parent = store.get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["blocktrain.best_run_id"] == records[1].run_id  # FAILED's is lower
    assert parent.data.tags["blocktrain.best_run_name"] == "train-b"
    listed = {a.path for a in store.client.list_artifacts(parent_id)}
    assert listed == {"sweep_summary.csv", "sweep_summary.json"}
    table = Path(store.client.download_artifacts(parent_id, "sweep_summary.csv", str(tmp_path)))
    assert table.read_text().splitlines() == [
        "run_id,name,status,lr,steps,val_loss",
        f"{records[0].run_id},train-exp,FINISHED,0.1,7,0.4",
        f"{records[1].run_id},train-b,FINISHED,0.5,5,0.2",
        f"{records[2].run_id},train-c,FAILED,0.9,5,0.1",
    ]
    summary = json.loads(
        Path(
            store.client.download_artifacts(parent_id, "sweep_summary.json", str(tmp_path))
        ).read_text()
    )
    assert summary["best"] == {"run_id": records[1].run_id, "name": "train-b", "value": 0.2}


def test_a_relaunched_run_of_a_sweep_reopens_its_parent(project: Path):
    (project / "b.yaml").write_text("lr: 0.5\n")
    scheduler = RecordingScheduler()
    result = run(project, scheduler, args=(project / "exp.yaml", project / "b.yaml"))
    layout = Layout(project)
    records = [read_record(layout, r.run_id) for r in result.runs]
    store = tracking.backend(records[0].tracking_uri, project)
    for record in records:
        store.set_status(record.run_id, "KILLED", None)
    finalize.finalize(layout, [r.run_id for r in records], lambda _: "CANCELLED")
    parent_id = str(records[0].parent_run_id)
    assert store.get_run(parent_id).info.status == "FINISHED"

    with pytest.raises(BlocktrainError, match="is named 'train-exp' and a relaunch keeps its"):
        run(project, scheduler, run_id=records[0].run_id, name="other")
    run(project, scheduler, run_id=records[0].run_id, name="train-exp")
    assert store.get_run(parent_id).info.status == "RUNNING"
    assert read_record(layout, records[0].run_id).name == "train-exp"


@pytest.mark.parametrize("files", [("exp.yaml",), ("exp.yaml", "exp.yaml")])
def test_a_refused_submission_leaves_no_record_folder_or_active_run(
    project: Path, files: tuple[str, ...]
):
    scheduler = RecordingScheduler(refusal=BlocktrainError("sbatch failed: no controller"))
    with pytest.raises(BlocktrainError, match="no controller"):
        run(project, scheduler, args=tuple(project / f for f in files))

    [jobs] = scheduler.submitted  # it got as far as submitting
    layout = Layout(project)
    assert list(layout.runs.iterdir()) == []
    assert list((layout.state / "launches").iterdir()) == []
    store = tracking.backend(f"sqlite:///{project / EMBEDDED_DB}", project)
    for spec in jobs.specs:
        assert store.get_run(spec.run_id).info.lifecycle_stage == "deleted"
    # The parent run of several is gone too: no run of the experiment is left.
    assert store.client.search_runs([store.experiment_id(project.name)]) == []


def test_relaunch_submits_the_same_run_at_its_next_attempt(project: Path):
    scheduler = RecordingScheduler()
    [first] = run(project, scheduler, args=(project / "exp.yaml",)).runs
    layout = Layout(project)
    record = read_record(layout, first.run_id)
    store = tracking.backend(record.tracking_uri, project)
    store.client.set_tag(first.run_id, ATTEMPT_TAG, "2")  # two attempts ran, then it stopped
    run_files = layout.run(first.run_id)
    run_files.stop_marker.touch()

    result = run(project, scheduler, run_id=first.run_id)

    assert scheduler.asked == [["101"]]
    assert result.relaunched_after == 2
    assert [(r.run_id, r.job_id) for r in result.runs] == [(first.run_id, "102")]
    [spec] = scheduler.submitted[1].specs
    assert (spec.run_id, spec.args, spec.attempt_base) == (first.run_id, record.args, 2)
    assert spec.code_dir == str(layout.launch(record.launch_id).code)  # the launch's own copy
    jobs = read_record(layout, first.run_id).jobs
    assert [(j.job_id, j.kind) for j in jobs] == [("101", "launch"), ("102", "relaunch")]
    assert not run_files.stop_marker.exists()
    assert len(store.client.search_runs([store.experiment_id(project.name)])) == 1


def test_relaunch_is_refused_while_the_run_is_queued_or_with_other_arguments(project: Path):
    scheduler = RecordingScheduler()
    [first] = run(project, scheduler, args=(project / "exp.yaml",)).runs
    scheduler.queue = [QueueEntry("101", "RUNNING", "0:10", "n1")]
    with pytest.raises(BlocktrainError, match=r"still has a job in the queue: 101 \(RUNNING\)"):
        run(project, scheduler, run_id=first.run_id)
    scheduler.queue = []
    with pytest.raises(BlocktrainError, match=r"immutable arguments.*steps: recorded 7, now 9"):
        run(project, scheduler, run_id=first.run_id, overrides=("steps=9",))
    assert len(scheduler.submitted) == 1
    assert len(read_record(Layout(project), first.run_id).jobs) == 1


def test_relaunch_checks_the_container_before_it_submits(project: Path):
    scheduler = RecordingScheduler()
    [first] = run(project, scheduler, args=(project / "exp.yaml",)).runs
    container = "container={runtime: charliecloud, image: gone.img}"
    with pytest.raises(BlocktrainError, match=r"gone.img not found; build it with"):
        run(project, scheduler, run_id=first.run_id, slurm=(container,))
    assert len(scheduler.submitted) == 1
    assert len(read_record(Layout(project), first.run_id).jobs) == 1


@pytest.mark.parametrize(
    ("request_fields", "error", "message"),
    [
        ({"slurm": ("nodez=2",)}, ProfileError, "nodez: unknown field for Profile"),
        ({"profile": "huge"}, ProfileError, "no profile 'huge'"),
        ({"args": (Path("missing.yaml"),)}, ArgsError, "missing.yaml: no such arguments file"),
        ({"overrides": ("stepz=3",)}, ArgsError, "unknown argument 'stepz' for train"),
        ({"entry": "trian"}, BlocktrainError, f"{MODULE} has no function 'trian'"),
        (
            {"run_id": "0123456789abcdef"},
            BlocktrainError,
            "no run or job matches .0123456789abcdef",
        ),
        ({"executor": "nonsense"}, BlocktrainError, "unknown executor 'nonsense'; use --executor"),
        ({"slurm": ("executor=cloud",)}, ProfileError, "executor: "),
        ({"name": "two\nlines"}, ArgsError, "--name must be one non-empty line"),
        ({"name": "x" * 251}, ArgsError, "--name is 251 characters long"),
        ({"best": "val_loss:down"}, ArgsError, "--best 'val_loss:down' must look like METRIC:min"),
    ],
)
def test_bad_input_creates_nothing(
    root: Path, request_fields: dict[str, Any], error: type[Exception], message: str
):
    scheduler = RecordingScheduler()
    with pytest.raises(error, match=message):
        run(root, scheduler, **request_fields)
    assert scheduler.submitted == []
    assert not (root / ".blocktrain").exists()
    assert not (root / EMBEDDED_DB).exists()


def test_dry_run_renders_the_plan_and_creates_nothing(root: Path):
    scheduler = RecordingScheduler()
    result = run(root, scheduler, args=(root / "exp.yaml",), dry_run=True)

    assert result.runs == ()
    assert result.plan is not None
    shown, script = result.plan.split("#!/bin/bash", 1)
    assert shown == f'# {root / "exp.yaml"}: {{"lr": 0.1, "steps": 7}}\n'
    files = Layout(root).launch(DRY_RUN_ID)
    assert f"--output={files.submitit}/%j_0_log.out" in script
    assert f"export PYTHONPATH={files.code}" in script
    assert scheduler.submitted == []
    assert not (root / ".blocktrain").exists()


def test_a_local_dry_run_says_where_the_tasks_run(root: Path):
    (root / "slurm" / "mine.yaml").write_text(PROFILE + "executor: local\n")
    result = run(root, RecordingScheduler(), args=(root / "exp.yaml",), dry_run=True)
    other = run(root, RecordingScheduler(), args=(root / "exp.yaml",), dry_run=True,
                profile="mine", executor="slurm")  # fmt: skip
    local = run(root, RecordingScheduler(), args=(root / "exp.yaml",), dry_run=True,
                profile="mine")  # fmt: skip
    assert result.plan is not None
    assert "# executor local" not in result.plan
    assert other.plan is not None
    assert "# executor local" not in other.plan
    assert local.plan is not None
    assert "# executor local: the tasks run on this machine" in local.plan


def test_the_scheduler_names_the_executor_of_each_recorded_job(project: Path):
    @dataclass
    class LocalRecording(RecordingScheduler):
        def submit(self, jobs: BatchJobs) -> list[Submitted]:
            return [Submitted(job_id=f"L{s.job_id}", watcher_id=None, executor="local")
                    for s in super().submit(jobs)]  # fmt: skip

    [launched] = run(project, LocalRecording(), args=(project / "exp.yaml",)).runs
    record = read_record(Layout(project), launched.run_id)
    assert (launched.job_id, record.executor, record.jobs[0].watcher_id) == ("L101", "local", None)
