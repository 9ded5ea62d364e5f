"""Jobs inside the training image with Charliecloud, on the real local Slurm cluster.

One image (conftest.py: `make training-image` of a baked project) and one comparison: the
baked baseline, shortened, as a 2-rank DDP job inside the image, once uninterrupted and once
preempted (SIGTERM to its tasks) and requeued; both end FINISHED with the image's digest
tagged, and the preempted one's last checkpoint equals the uninterrupted one's bit for bit.
Then a container that cannot run (no such runtime, no image, a runtime not installed) is
refused by slurm-launch with one line and exit 2, creating nothing. Podman cannot start a
container on this machine (its OCI runtime's setrlimit is refused); what it can do, load the
docker-archive `make training-image ARCHIVE=...` writes and name its digest, is tested here.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from built_image import BuiltImage

from blocktrain.launch.containers.images import digest
from slurm_service import SlurmCluster

pytestmark = pytest.mark.integration
FINAL = ("FINISHED", "FAILED", "KILLED")
CONTAINER = "container={runtime: charliecloud, image: build/training.img}"


def ch_run(built: BuiltImage, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ch-run", "--set-env", str(built.path), "--", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=built.project.env,
    )  # fmt: skip


def test_the_image_holds_torch_blocktrain_and_the_project_and_passes_signals_and_status(
    built_image: BuiltImage,
):
    imported = ch_run(
        built_image, "python", "-c",
        "import torch, blocktrain, drone_target_recognition, sys; print(sys.executable, "
        "torch.__version__)",
    )  # fmt: skip
    out, err = imported.communicate(timeout=120)
    assert imported.returncode == 0, err
    assert out.startswith("/opt/venv/bin/python ")
    assert ch_run(built_image, "python", "-c", "raise SystemExit(3)").wait(60) == 3
    # ch-run execs the command: the process Slurm signals is Python itself.
    waiting = ch_run(
        built_image, "python", "-c",
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGUSR2, lambda *_: sys.exit(7))\n"
        "print(os.getpid(), flush=True)\ntime.sleep(60)\n",
    )  # fmt: skip
    assert waiting.stdout is not None
    assert int(waiting.stdout.readline()) == waiting.pid
    waiting.send_signal(signal.SIGUSR2)
    assert waiting.wait(30) == 7
    assert built_image.digest == digest("charliecloud", str(built_image.path))


# --- on the cluster ------------------------------------------------------------------------


def rows(root: Path, query: str, *args: str) -> list[tuple[str, ...]]:
    db = root / "mlflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return [tuple(str(v) for v in row) for row in connection.execute(query, args)]


def run_status(root: Path, run_id: str) -> str:
    found = rows(root, "select status from runs where run_uuid=?", run_id)
    return found[0][0] if found else "MISSING"


def tags(root: Path, run_id: str) -> dict[str, str]:
    return {
        row[0]: row[1] for row in rows(root, "select key, value from tags where run_uuid=?", run_id)
    }


def attempt_log(root: Path, run_id: str, attempt: int) -> str:
    path = root / ".blocktrain" / "logs" / run_id / f"attempt-{attempt}" / "rank-0.out"
    return path.read_text() if path.exists() else ""


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


def last_weights(root: Path, run_id: str) -> dict[str, object]:
    import torch

    from blocktrain.train import find_checkpoint

    folder = root / ".blocktrain" / "runs" / run_id / "checkpoints"
    return torch.load(find_checkpoint(folder=folder, which="last"), weights_only=True)["model"]


def test_the_baseline_in_the_image_is_preempted_requeued_and_resumes_bit_identical(
    built_image: BuiltImage, slurm_cluster: SlurmCluster
):
    import torch

    project, root = built_image.project, built_image.project.root
    cluster = {"SLURM_CONF": str(slurm_cluster.conf)}
    launch = [
        ".venv/bin/slurm-launch", "train", "--args", "experiments/baseline.yaml",
        "--profile", "local", "--slurm", CONTAINER, "--set", "export=false",
        "--set", "schedule.max_steps=120", "--set", "schedule.log_every_steps=5",
    ]  # fmt: skip
    started = time.monotonic()
    run_ids = []
    for _ in range(2):
        done = project.run(*launch, env=cluster)
        [line] = [w for w in done.stdout.splitlines() if w.startswith("run ")]
        run_ids.append((line.split()[1], line.split()[3]))
    (whole, _), (preempted, job_id) = run_ids
    wait(lambda: attempt_log(root, preempted, 1).count(" loss ") >= 2, 300, "attempt 1 to train")
    cancelled = project.run("scancel", "--signal=TERM", job_id, env=cluster)
    assert cancelled.returncode == 0
    wait(lambda: all(run_status(root, r) in FINAL for r in (whole, preempted)), 480, "both runs")
    print(f"two containerised runs, one preempted: {time.monotonic() - started:.0f} s")
    for run_id in (whole, preempted):
        log = project.run(".venv/bin/slurm-log", run_id, env=cluster, check=False).stdout
        assert run_status(root, run_id) == "FINISHED", log[-3000:]
        shown = tags(root, run_id)
        assert shown["container.runtime"] == "charliecloud"
        assert shown["container.digest"] == built_image.digest
        assert shown["container.image"] == str(root / "build" / "training.img")
    assert tags(root, whole)["blocktrain.attempt"] == "1"
    assert tags(root, preempted)["blocktrain.attempt"] == "2"
    restarts = root / ".blocktrain" / "runs" / preempted / "restarts.json"
    assert json.loads(restarts.read_text()) == {"preemption": 1}  # the signal reached Python
    assert "resumed from " in attempt_log(root, preempted, 2)
    first, second = last_weights(root, whole), last_weights(root, preempted)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # pyright: ignore[reportArgumentType]


def _snapshot(root: Path) -> tuple[list[str], int]:
    runs = root / ".blocktrain" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else [], len(
        rows(root, "select run_uuid from runs")
    )


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ("{runtime: docker, image: x}", "container.runtime: expected one of"),
        ("{runtime: charliecloud, image: build/none.img}", "none.img not found; build it with"),
        ("{runtime: apptainer, image: build/training.sif}", "apptainer is not installed here"),
    ],
)
def test_a_container_that_cannot_run_is_one_line_exit_2_and_nothing_queued(
    built_image: BuiltImage, slurm_cluster: SlurmCluster, container: str, message: str
):
    if "apptainer" in container:
        assert shutil.which("apptainer") is None  # it cannot be installed on these machines
    project, root = built_image.project, built_image.project.root
    cluster = {"SLURM_CONF": str(slurm_cluster.conf)}
    before = _snapshot(root)

    def queued() -> set[str]:
        return set(project.run("squeue", "-h", "-o", "%i", env=cluster).stdout.split())

    before_jobs = queued()
    done = project.run(
        ".venv/bin/slurm-launch", "train", "--args", "experiments/baseline.yaml",
        "--slurm", f"container={container}", env=cluster, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert _snapshot(root) == before
    assert queued() <= before_jobs  # no new job (earlier tests' watchers may end meanwhile)


# --- Podman: the archive ---------------------------------------------------------------------


def builder() -> ModuleType:
    """scripts/training-image as a module (it has no .py suffix)."""
    path = Path(__file__).resolve().parents[3] / "scripts" / "training-image"
    loader = importlib.machinery.SourceFileLoader("training_image", str(path))
    spec = importlib.util.spec_from_loader("training_image", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    loader.exec_module(module)
    return module


def test_podman_loads_the_archive_and_reports_its_id_as_the_digest(tmp_path: Path):
    image = tmp_path / "img"
    (image / "ch").mkdir(parents=True)
    (image / "ch" / "environment").write_text("PATH=/opt/venv/bin:/usr/bin\nPYTHONUNBUFFERED=1\n")
    (image / "etc").mkdir()
    (image / "etc" / "os-release").write_text("ID=debian\n")
    (image / "bin").symlink_to("usr/bin")
    reference = f"localhost/blocktrain-archive-test:{tmp_path.name.lower()}"
    archive = tmp_path / "image.tar"
    image_id = builder().write_archive(image, archive, reference)
    loaded = subprocess.run(
        ["podman", "load", "-i", str(archive)], capture_output=True, text=True, check=False
    )
    try:
        assert loaded.returncode == 0, loaded.stderr
        assert digest("podman", reference) == image_id
        shown = subprocess.run(
            ["podman", "image", "inspect", reference], capture_output=True, text=True, check=True
        )
        [config] = json.loads(shown.stdout)
        assert "PATH=/opt/venv/bin:/usr/bin" in config["Config"]["Env"]
        listed = subprocess.run(
            ["tar", "-tf", str(archive)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert "manifest.json" in listed
    finally:
        subprocess.run(["podman", "rmi", "-f", reference], capture_output=True, check=False)
