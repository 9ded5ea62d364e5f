"""The project template: `make project` and plain cookiecutter bake it, and the baked project works.

Baking checks the exact file set, that no Jinja is left, how bad values are refused, and where
a project gets blocktrain when nobody says (the template's own folder or git repository). One
project baked by plain `cookiecutter --no-input` with the defaults, the same as `make project`
bakes, then runs its own `make init lint type-check test`, trains its baseline with two DDP
ranks on the real local cluster, labels a generated video, runs its ablation sweep as one job
array, and trains a shortened baseline without Slurm (`--executor local`), once preempted.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from template_project import REPO, Baked, bake, clean_env, cookiecutter, template_copy

pytestmark = pytest.mark.integration

EXPECTED_FILES = [
    ".envrc",
    ".gitignore",
    "MLproject",
    "Makefile",
    "README.md",
    "apptainer/training.def",
    "experiments/ablation.yaml",
    "experiments/baseline.yaml",
    "poetry.lock",
    "poetry.toml",
    "pyproject.toml",
    "requirements.lock",
    "slurm/gpu.yaml",
    "slurm/local.yaml",
    "src/PACKAGE/__init__.py",
    "src/PACKAGE/data.py",
    "src/PACKAGE/entry.py",
    "src/PACKAGE/generate.py",
    "src/PACKAGE/model.py",
    "src/PACKAGE/py.typed",
    "src/PACKAGE/synthetic.py",
    "src/PACKAGE/video.py",
    "tests/conftest.py",
    "tests/test_data.py",
    "tests/test_entry.py",
    "tests/test_synthetic.py",
    "tests/test_video.py",
]
# Four classes: chance is 0.25. The baseline reaches about 0.9 on the synthetic dataset.
ACCURACY_THRESHOLD = 0.6
FINAL = ("FINISHED", "FAILED", "KILLED")


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> Baked:
    """The template baked by plain cookiecutter with its defaults, `make init` done, its files
    committed.

    cookiecutter is given the template as a path relative to the folder it starts in, which it
    leaves relative in what it tells the template (`_repo_dir`).
    """
    tmp = tmp_path_factory.mktemp("baked")
    env = clean_env(tmp)
    done = cookiecutter(tmp, env, os.path.relpath(REPO, tmp), "-o", tmp)
    assert done.returncode == 0, done.stderr
    root = tmp / "drone-target-recognition"
    venv = root / ".venv"
    env = {**env, "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}
    project = Baked(root=root, package="drone_target_recognition", env=env)
    project.run("make", "init")
    project.run("git", "init", "-q")
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baked")
    return project


def files_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_bake_writes_exactly_the_template_files_with_every_value_rendered(tmp_path: Path):
    env = clean_env(tmp_path)
    values = ["project_name='Sky Watch'", "author='Ada Lovelace'", "s3_bucket=sky-data"]
    done = bake(tmp_path / "out", env, *values)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "out" / "sky-watch"
    assert f"Created {root}" in done.stdout
    assert files_of(root) == [f.replace("PACKAGE", "sky_watch") for f in EXPECTED_FILES]
    for name in files_of(root):
        text = (root / name).read_text()
        for leftover in ("{{", "{%", "{#", "cookiecutter"):
            assert leftover not in text, f"{name} holds {leftover!r}"
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "sky-watch"
    assert project["project"]["authors"] == [{"name": "Ada Lovelace"}]
    assert f"blocktrain @ file://{REPO}" in project["project"]["dependencies"]
    assert project["tool"]["blocktrain"]["entry-module"] == "sky_watch.entry"
    makefile = (root / "Makefile").read_text()
    assert f"BLOCKTRAIN ?= {REPO}\n" in makefile
    assert "DATA ?= s3://sky-data/drone-sky\n" in makefile
    for name in ("experiments/baseline.yaml", "experiments/ablation.yaml", "MLproject"):
        assert isinstance(yaml.safe_load((root / name).read_text()), dict)
    baseline = yaml.safe_load((root / "experiments" / "baseline.yaml").read_text())
    assert baseline["data"]["source"] == "s3://sky-data/drone-sky"


def test_an_existing_project_folder_is_refused_and_left_alone(tmp_path: Path):
    env = clean_env(tmp_path)
    assert bake(tmp_path, env).returncode == 0
    root = tmp_path / "drone-target-recognition"
    (root / "notes.txt").write_text("mine")
    before = {name: (root / name).read_bytes() for name in files_of(root)}
    again = bake(tmp_path, env, "author=Someone")
    assert again.returncode != 0
    errors = [line for line in again.stderr.splitlines() if not line.startswith("make: ***")]
    message = f"{root} already exists; choose another project_slug, or another folder (OUTPUT=...)"
    assert errors == [f"make project: error: {message}"]
    assert {name: (root / name).read_bytes() for name in files_of(root)} == before


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("package_name=class", "package_name 'class' is not a lower-case Python identifier"),
        ("project_slug=Sky_Watch", "project_slug 'Sky_Watch' must be lower-case"),
        ("s3_bucket=Not_A_Bucket", "s3_bucket 'Not_A_Bucket' is not an S3 bucket name"),
        ("blocktrain=../blocktrain", "must be an absolute path"),
        ("blocktrain=/tmp", "/tmp is not the blocktrain toolkit"),
    ],
)
def test_a_bad_value_stops_with_one_line_and_writes_nothing(
    tmp_path: Path, value: str, message: str
):
    output = tmp_path / "out"
    done = bake(output, clean_env(tmp_path), value)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("make project: error: ")
    assert message in errors[0]
    assert list(output.iterdir()) == []


@pytest.mark.parametrize(
    ("source", "requirement"),
    [
        (
            "git+https://example.org/lab/blocktrain.git@v0.1.0",
            "blocktrain @ git+https://example.org/lab/blocktrain.git@v0.1.0",
        ),
        ("0.1.0", "blocktrain==0.1.0"),
    ],
)
def test_blocktrain_can_come_from_git_or_a_version(tmp_path: Path, source: str, requirement: str):
    done = bake(tmp_path, clean_env(tmp_path), f"blocktrain={source}")
    assert done.returncode == 0, done.stderr
    root = tmp_path / "drone-target-recognition"
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert requirement in project["project"]["dependencies"]
    assert f"BLOCKTRAIN ?= {requirement}\n" in (root / "Makefile").read_text()
    assert "SLURM_CONF" not in (root / ".envrc").read_text()  # no toolkit folder to point at


def dependencies(root: Path) -> list[str]:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]


def test_plain_cookiecutter_installs_blocktrain_from_the_template_folder(baked: Baked):
    assert f"blocktrain @ file://{REPO}" in dependencies(baked.root)
    assert f"BLOCKTRAIN ?= {REPO}\n" in (baked.root / "Makefile").read_text()
    envrc = (baked.root / ".envrc").read_text()
    assert f'SLURM_CONF="{REPO}/.blocktrain/slurm/etc/slurm.conf"' in envrc
    done = baked.run(".venv/bin/python", "-c", "import blocktrain; print(blocktrain.__file__)")
    assert done.stdout.strip() == str(REPO / "src" / "blocktrain" / "__init__.py")


def test_plain_cookiecutter_and_make_project_bake_the_same_project(baked: Baked, tmp_path: Path):
    done = bake(tmp_path, clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    made = tmp_path / "drone-target-recognition"
    assert files_of(made) == [f.replace("PACKAGE", baked.package) for f in EXPECTED_FILES]
    for name in files_of(made):
        assert (baked.root / name).read_bytes() == (made / name).read_bytes(), name


def git_repository(folder: Path, env: dict[str, str]) -> Path:
    """A git repository holding the template alone, its commit tagged v0."""
    template_copy(folder)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "template"], ["tag", "v0"]):
        subprocess.run([*git, *argv], env=env, capture_output=True, timeout=60, check=True)
    return folder


@pytest.mark.parametrize("checkout", [None, "v0"])
def test_plain_cookiecutter_from_git_installs_that_repository(tmp_path: Path, checkout: str | None):
    env = clean_env(tmp_path)
    url = f"file://{git_repository(tmp_path / 'blocktrain.git', env)}"
    options = ["--checkout", checkout] if checkout else []
    done = cookiecutter(tmp_path, env, url, *options, "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    root = tmp_path / "out" / "drone-target-recognition"
    requirement = f"blocktrain @ git+{url}" + (f"@{checkout}" if checkout else "")
    assert requirement in dependencies(root)
    assert f"BLOCKTRAIN ?= {requirement}\n" in (root / "Makefile").read_text()
    assert "SLURM_CONF" not in (root / ".envrc").read_text()
    # The post-generation hook points the template's poetry.lock at the same repository.
    lock = tomllib.loads((root / "poetry.lock").read_text())
    [blocktrain] = [package for package in lock["package"] if package["name"] == "blocktrain"]
    assert blocktrain["source"] == {"type": "git", "url": url, "reference": checkout or "HEAD"}


def test_plain_cookiecutter_from_a_zip_needs_blocktrain_given(tmp_path: Path):
    template_copy(tmp_path / "zipped" / "blocktrain")
    archive = shutil.make_archive(str(tmp_path / "blocktrain"), "zip", tmp_path / "zipped")
    env, output = clean_env(tmp_path), tmp_path / "out"
    refused = cookiecutter(tmp_path, env, archive, "-o", output)
    assert refused.returncode != 0
    [line] = [line for line in refused.stderr.splitlines() if "error: blocktrain" in line]
    assert line.endswith(
        f"error: blocktrain cannot be installed from the zip {archive}; pass "
        "blocktrain=/path/to/blocktrain, blocktrain=git+https://... or blocktrain=0.1.0"
    )
    assert list(output.iterdir()) == []
    given = cookiecutter(tmp_path, env, archive, "-o", output, "blocktrain=0.1.0")
    assert given.returncode == 0, given.stderr
    assert "blocktrain==0.1.0" in dependencies(output / "drone-target-recognition")


def test_the_baked_project_passes_its_own_init_lint_type_check_and_test(baked: Baked):
    done = baked.run("make", "init", "lint", "type-check", "test", timeout=600)
    assert "0 errors" in done.stdout
    assert " passed" in done.stdout
    assert " failed" not in done.stdout


def test_the_dataset_goes_to_s3_and_is_read_back_through_the_cache(baked: Baked, tmp_path: Path):
    """`generate --output s3://...` uploads; `data.load` localizes the prefix and splits it."""
    state = tmp_path / "s3"
    up = subprocess.run(
        [sys.executable, REPO / "scripts" / "local-s3", "up", "--dir", state],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        env = {
            name: shlex.split(value)[0]
            for name, _, value in (
                line.removeprefix("export ").partition("=") for line in up.stdout.splitlines()
            )
            if value
        }
        env["DATA_PATH"] = str(tmp_path / "cache")
        entry = [".venv/bin/python", "-m", f"{baked.package}.entry", "generate"]
        uri = "s3://sky-test/drone-sky"
        small = ["--output", uri, "--images", "40", "--clips", "1", "--frames", "3"]
        baked.run(*entry, *small, env=env)
        again = baked.run(*entry, *small, env=env, check=False)
        assert again.returncode == 2
        assert f"error: {uri} already holds objects" in again.stderr
        script = (
            f"from {baked.package}.data import Data, load\n"
            f"splits = load(Data(source='{uri}', size=48), log_stats=False)\n"
            "print(len(splits.train), len(splits.val), len(splits.test), *splits.classes)\n"
        )
        done = baked.run(".venv/bin/python", "-c", script, env=env)
        assert done.stdout.split() == ["28", "6", "6", "aircraft", "bird", "drone", "sky"]
        cached = list((tmp_path / "cache").rglob("*.png"))
        assert len(cached) == 40
    finally:
        subprocess.run(
            [sys.executable, REPO / "scripts" / "local-s3", "down", "--purge", "--dir", state],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip


# --- on the local cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(baked: Baked) -> Path:
    """The project's default dataset, made by `make data`."""
    baked.run("make", "data", timeout=300)
    return baked.root / "data" / "sky"


def mlflow_rows(root: Path, query: str, *args: str) -> list[tuple[str, ...]]:
    db = root / "mlflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return [tuple(str(v) for v in row) for row in connection.execute(query, args)]


def keyed(root: Path, table: str, run_id: str) -> dict[str, str]:
    """The tags or params of a run."""
    rows = mlflow_rows(root, f"select key, value from {table} where run_uuid=?", run_id)  # noqa: S608
    return {row[0]: row[1] for row in rows}


def run_status(root: Path, run_id: str) -> str:
    rows = mlflow_rows(root, "select status from runs where run_uuid=?", run_id)
    return rows[0][0] if rows else "MISSING"


def wait_until_ended(baked: Baked, run_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(run_status(baked.root, r) in FINAL for r in run_ids):
            return
        time.sleep(2)
    status = baked.run(".venv/bin/slurm-status", "--all", check=False)
    pytest.fail(f"runs still going after {timeout:.0f} s:\n{status.stdout}{status.stderr}")


def launched(stdout: str) -> list[tuple[str, str]]:
    """(run id, job id) of each `run ... job ...` line of slurm-launch."""
    pairs = []
    for line in stdout.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] == "run" and words[2] == "job":
            pairs.append((words[1], words[3]))
    return pairs


def test_baseline_trains_two_ddp_ranks_on_the_cluster_and_labels_a_video(
    baked: Baked, dataset: Path, slurm_cluster
):
    """The baseline, in 6 of its 12 epochs (make demo trains all 12), above the threshold."""
    cluster = {"SLURM_CONF": str(slurm_cluster.conf)}
    done = baked.run(
        ".venv/bin/slurm-launch", "train", "--args", "experiments/baseline.yaml",
        "--profile", "local", "--set", "schedule.epochs=6", env=cluster,
    )  # fmt: skip
    [(run_id, _)] = launched(done.stdout)
    wait_until_ended(baked, [run_id], timeout=540)
    log = baked.run(".venv/bin/slurm-log", run_id, env=cluster, check=False).stdout
    assert run_status(baked.root, run_id) == "FINISHED", log[-3000:]
    assert keyed(baked.root, "tags", run_id)["world_size"] == "2"
    [(accuracy,)] = mlflow_rows(
        baked.root,
        "select value from latest_metrics where run_uuid=? and key='val_accuracy'",
        run_id,
    )
    print(f"baseline validation accuracy {float(accuracy):.3f} (threshold {ACCURACY_THRESHOLD})")
    assert float(accuracy) >= ACCURACY_THRESHOLD
    exports = baked.root / ".blocktrain" / "runs" / run_id / "exports"
    assert {"model.pth", "model.pt", "model.onnx"} <= {p.name for p in exports.iterdir()}

    evaluated = baked.run("make", "evaluate", f"RUN={run_id}")
    assert "test accuracy" in evaluated.stdout
    assert "test_accuracy" in keyed(baked.root, "latest_metrics", run_id)
    baked.run("make", "predict", f"RUN={run_id}", "VIDEO=data/sky/videos/clip-000.y4m")
    output = baked.root / "predictions" / "clip-000.csv"
    with output.open() as file:
        rows = list(csv.DictReader(file))
    with (dataset / "videos" / "clip-000.csv").open() as file:
        truth = [row["label"] for row in csv.DictReader(file)]
    assert [int(row["index"]) for row in rows] == list(range(len(truth)))
    assert {row["label"] for row in rows} <= {"aircraft", "bird", "drone", "sky"}
    agree = sum(row["label"] == label for row, label in zip(rows, truth, strict=True))
    print(f"video clip-000: {agree} of {len(truth)} frames labelled as the generator drew them")


def test_the_ablation_sweep_runs_as_one_job_array(baked: Baked, dataset: Path, slurm_cluster):
    """Every element, shortened to a few steps on one rank each, so that two run at once."""
    cluster = {"SLURM_CONF": str(slurm_cluster.conf)}
    done = baked.run(
        ".venv/bin/slurm-launch", "train", "--sweep", "experiments/ablation.yaml",
        "--set", "schedule.max_steps=4", "--set", "export=false",
        "--slurm", "tasks_per_node=1", env=cluster,
    )  # fmt: skip
    runs = launched(done.stdout)
    assert len(runs) == 5
    array = {job.split("_")[0] for _, job in runs}
    assert len(array) == 1
    assert sorted(job.split("_")[1] for _, job in runs) == ["0", "1", "2", "3", "4"]
    run_ids = [run_id for run_id, _ in runs]
    wait_until_ended(baked, run_ids, timeout=420)
    assert [run_status(baked.root, r) for r in run_ids] == ["FINISHED"] * 5
    sweeps, splits, settings = set(), set(), set()
    for run_id in run_ids:
        tags, params = keyed(baked.root, "tags", run_id), keyed(baked.root, "params", run_id)
        sweeps.add(tags["blocktrain.sweep_id"])
        splits.add(json.dumps({k: v for k, v in params.items() if k.startswith("data.train.")}))
        settings.add((params["model.width"], params["data.augment"], params["optim.lr"]))
    assert len(sweeps) == 1
    assert len(splits) == 1  # the same training split in every run
    assert len(settings) == 5


# --- without Slurm -------------------------------------------------------------------------


def without_slurm(baked: Baked, tools: Path) -> dict[str, str]:
    """The project's .venv and git on PATH, nothing else: no sbatch, squeue or sacct."""
    tools.mkdir()
    git = shutil.which("git")
    assert git is not None
    (tools / "git").symlink_to(git)
    path = f"{baked.root / '.venv' / 'bin'}{os.pathsep}{tools}"
    for command in ("sbatch", "squeue", "sacct"):
        assert shutil.which(command, path=path) is None
    return {"PATH": path}


def local_job(baked: Baked, job_id: str) -> dict[str, Any]:
    """The job's state file (.blocktrain/local-jobs/<job>.json)."""
    return json.loads((baked.root / ".blocktrain" / "local-jobs" / f"{job_id}.json").read_text())


def attempt_log(baked: Baked, run_id: str, attempt: int) -> str:
    path = baked.root / ".blocktrain" / "logs" / run_id / f"attempt-{attempt}" / "rank-0.out"
    return path.read_text() if path.exists() else ""


def status_row(baked: Baked, env: dict[str, str], run_id: str) -> dict[str, object]:
    """The run's row of `slurm-status --json`, once its state is final: the supervisor records
    the job's end just after the run's own."""
    deadline = time.monotonic() + 60
    while True:
        [row] = json.loads(baked.run(".venv/bin/slurm-status", "--json", run_id, env=env).stdout)
        if row["state"] in FINAL or time.monotonic() > deadline:
            return row
        time.sleep(1)


def cancel_local_jobs(baked: Baked, env: dict[str, str]) -> None:
    """No supervisor outlives the test: cancel the local jobs that still run."""
    for path in (baked.root / ".blocktrain" / "local-jobs").glob("L*.json"):
        elements = json.loads(path.read_text())["elements"]
        if any(e["state"] in ("PENDING", "RUNNING", "REQUEUED") for e in elements):
            baked.run(".venv/bin/slurm-cancel", path.stem, env=env, check=False)


def test_the_baseline_runs_without_slurm_and_resumes_after_a_preemption(
    baked: Baked, dataset: Path, tmp_path: Path
):
    """`--executor local` on a PATH without Slurm: the baseline, shortened, ends FINISHED with
    its log; a second one, its supervisor sent SIGTERM mid-training, resumes on attempt 2."""
    env = without_slurm(baked, tmp_path / "tools")
    launch = [
        ".venv/bin/slurm-launch", "train", "--args", "experiments/baseline.yaml",
        "--profile", "local", "--executor", "local", "--set", "export=false",
        "--set", "schedule.log_every_steps=5",
    ]  # fmt: skip
    try:
        done = baked.run(*launch, "--set", "schedule.max_steps=20", env=env)
        [(run_id, job_id)] = launched(done.stdout)
        assert job_id.startswith("L")
        wait_until_ended(baked, [run_id], timeout=300)
        shown = baked.run(".venv/bin/slurm-log", run_id, env=env, check=False)
        assert run_status(baked.root, run_id) == "FINISHED", shown.stdout[-3000:]
        row = status_row(baked, env, run_id)
        assert (row["job_id"], row["executor"], row["state"]) == (job_id, "local", "FINISHED")
        assert any(line.startswith("step ") for line in shown.stdout.splitlines())
        assert " loss " in shown.stdout
        assert "validation accuracy " in shown.stdout
        assert f"==> attempt 1 (job {job_id}" in shown.stderr

        again = baked.run(*launch, "--set", "schedule.max_steps=150", env=env)
        [(again_id, again_job)] = launched(again.stdout)
        deadline = time.monotonic() + 240
        while attempt_log(baked, again_id, 1).count(" loss ") < 2:
            assert time.monotonic() < deadline, "attempt 1 did not start training"
            time.sleep(1)
        pid = local_job(baked, again_job)["supervisor_pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGTERM)
        wait_until_ended(baked, [again_id], timeout=300)
        assert run_status(baked.root, again_id) == "FINISHED", attempt_log(baked, again_id, 2)
        assert keyed(baked.root, "tags", again_id)["blocktrain.attempt"] == "2"
        assert "resumed from " in attempt_log(baked, again_id, 2)
        assert status_row(baked, env, again_id)["state"] == "FINISHED"
        [element] = local_job(baked, again_job)["elements"]
        assert element["restart_count"] == 1
    finally:
        cancel_local_jobs(baked, env)


# --- what a launch waits for ---------------------------------------------------------------


def test_the_entry_module_keeps_torch_off_the_launch_path_and_a_heavy_one_is_named(
    baked: Baked,
):
    """The template's entry module imports torch inside its functions, so a launch's check
    says nothing of imports; a module that imports torch at its top gets the one line."""
    dry = [".venv/bin/slurm-launch", "train", "--args", "experiments/baseline.yaml", "--dry-run"]
    own = baked.run(*dry)
    assert "importing the entry module" not in own.stderr, own.stderr
    heavy = baked.root / "heavy_entry.py"
    heavy.write_text(f"import torch  # noqa: F401\n\nfrom {baked.package}.entry import train\n")
    try:
        done = baked.run(*dry, "--module", "heavy_entry")
    finally:
        heavy.unlink()
    [line] = [ln for ln in done.stderr.splitlines() if "importing the entry module" in ln]
    assert line.startswith("slurm-launch: importing the entry module heavy_entry took "), line
    assert "(torch" in line
