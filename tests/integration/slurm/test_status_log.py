"""slurm-status and slurm-log against the local cluster: a real two-element job array of
tests/shapes_demo.py, launched by slurm-launch in a throw-away project, watched from pending to
completed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from slurm_service import SlurmCluster  # the fixture's type; pytest provides the fixture itself

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "tests" / "shapes_demo.py"
BIN = Path(sys.executable).parent
DONE_TIMEOUT_S = 300.0  # two demo runs of ~15 s each; the elements may run one after the other
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def make_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text('[tool.blocktrain]\nentry-module = "shapes_demo"\n')
    # A top-level module of the project: the frozen code copy carries it to the jobs.
    shutil.copy(DEMO, root / DEMO.name)
    (root / "slurm").mkdir(exist_ok=True)
    shutil.copy(REPO / "slurm" / "local.yaml", root / "slurm" / "local.yaml")
    return root


def command(
    cluster: SlurmCluster, project: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """A blocktrain command in the project, against the cluster, with the embedded MLflow."""
    env = {k: v for k, v in cluster.env.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status_rows(cluster: SlurmCluster, project: Path, *args: str) -> dict[str, dict[str, object]]:
    done = command(cluster, project, "slurm-status", "--json", *args)
    assert done.returncode == 0, done.stderr
    return {row["run_id"]: row for row in json.loads(done.stdout)}


@pytest.fixture(scope="module")
def launched(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], dict[str, dict[str, object]]]:
    """The project, {run id: job id} of the array, and slurm-status's rows just after launch."""
    project = make_project(tmp_path_factory.mktemp("status-project"))
    for name in ("a.yaml", "b.yaml"):
        shutil.copy(DEMO.with_suffix(".yaml"), project / name)
    done = command(
        slurm_cluster, project, "slurm-launch", "train", "--args", "a.yaml", "--args", "b.yaml",
        "--set", "steps=40",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    runs = dict(re.findall(r"^run (\w+)  job (\S+)", done.stdout, flags=re.MULTILINE))
    assert len(runs) == 2, done.stdout
    return project, runs, status_rows(slurm_cluster, project)


def diagnosis(project: Path) -> str:
    """The run's status files and the tails of the jobs' own stderr, for a failure message."""
    state = project / ".blocktrain"
    parts = [
        f"--- {p.relative_to(state)}\n{p.read_text()}" for p in state.glob("logs/*/status.json")
    ]
    for err in sorted(state.glob("launches/*/submitit/*_log.err")):
        tail = "\n".join(err.read_text(errors="replace").splitlines()[-15:])
        parts.append(f"--- {err.name}\n{tail}")
    return "\n".join(parts)


def wait_until_ended(
    cluster: SlurmCluster, project: Path, runs: dict[str, str]
) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while time.monotonic() < deadline:
        rows = status_rows(cluster, project)
        if all(rows[run]["state"] in ENDED for run in runs):
            return rows
        time.sleep(1)
    pytest.fail(f"the demo array did not end in {DONE_TIMEOUT_S:.0f} s", pytrace=False)


def test_status_shows_both_array_elements_queued(
    launched: tuple[Path, dict[str, str], dict[str, dict[str, object]]],
) -> None:
    _, runs, early = launched
    assert set(early) == set(runs)
    bases = {job.split("_")[0] for job in runs.values()}
    assert len(bases) == 1, "one job array"
    for run_id, job_id in runs.items():
        assert early[run_id]["job_id"] == job_id
        assert early[run_id]["state"] in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")
    assert {row["array_index"] for row in early.values()} == {0, 1}


def test_log_prints_the_training_lines(
    slurm_cluster: SlurmCluster,
    launched: tuple[Path, dict[str, str], dict[str, dict[str, object]]],
) -> None:
    """--follow right after the launch: it waits for the job, then follows it to the end."""
    project, runs, _ = launched
    run_id = next(iter(runs))
    followed = command(slurm_cluster, project, "slurm-log", run_id[:8], "--follow")
    assert followed.returncode == 0, followed.stderr
    assert "step    0  loss" in followed.stdout
    assert "validation accuracy" in followed.stdout
    job_id = runs[run_id]
    assert f"==> attempt 1 (job {job_id}, host " in followed.stderr
    printed = command(slurm_cluster, project, "slurm-log", job_id)
    assert printed.returncode == 0
    assert printed.stdout == followed.stdout


def test_status_shows_completion_attempt_and_metric(
    slurm_cluster: SlurmCluster,
    launched: tuple[Path, dict[str, str], dict[str, dict[str, object]]],
) -> None:
    project, runs, _ = launched
    rows = wait_until_ended(slurm_cluster, project, runs)
    for run_id in runs:
        row = rows[run_id]
        assert row["state"] == "COMPLETED", f"{row}\n{diagnosis(project)}"
        assert row["attempt"] == 1
        assert str(row["metric"]).startswith("val_accuracy=")
        assert row["nodes"]
        assert row["elapsed"]
    table = command(slurm_cluster, project, "slurm-status")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "RUN", "NAME", "JOB", "STATE", "STATUS", "ATTEMPT", "ELAPSED", "NODES", "METRIC",
    ]  # fmt: skip
    assert {line.split()[0] for line in table.stdout.splitlines()[1:]} == {r[:8] for r in runs}


def test_status_without_accounting_uses_the_runs_own_status(
    slurm_cluster: SlurmCluster,
    launched: tuple[Path, dict[str, str], dict[str, dict[str, object]]],
    tmp_path: Path,
) -> None:
    """A client configuration with accounting off: sacct fails, the table still answers."""
    project, runs, _ = launched
    wait_until_ended(slurm_cluster, project, runs)
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        re.sub(
            r"^AccountingStorageType=.*$",
            "AccountingStorageType=accounting_storage/none",
            slurm_cluster.conf.read_text(),
            flags=re.MULTILINE,
        )
    )
    no_accounting = {**slurm_cluster.env, "SLURM_CONF": str(conf)}
    done = subprocess.run(
        [str(BIN / "slurm-status"), "--json"],
        cwd=project,
        env=no_accounting,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    states = {row["state"] for row in json.loads(done.stdout)}
    assert states == {"FINISHED"}, f"{done.stdout}\n{diagnosis(project)}"
    assert done.stderr.startswith("slurm-status: note: no accounting")


@pytest.mark.parametrize("program", ["slurm-status", "slurm-log"])
def test_unknown_id_is_one_line_and_exit_2(
    slurm_cluster: SlurmCluster,
    launched: tuple[Path, dict[str, str], dict[str, dict[str, object]]],
    program: str,
) -> None:
    project, _, _ = launched
    done = command(slurm_cluster, project, program, "nosuchrun")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"{program}: error: no run or job matches 'nosuchrun'; see slurm-status --all\n"
    )


SYNTHETIC_JOB_BASE = 9_000_000  # far above the ids the test cluster hands out


def test_status_lists_100_synthetic_records(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "many")
    for index in range(100):
        run_id = f"{index:032x}"
        run_dir = project / ".blocktrain" / "runs" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps(synthetic_record(run_id, index)))
        if index % 2:  # half of them finished by their own account
            logs = project / ".blocktrain" / "logs" / run_id
            (logs / "attempt-1").mkdir(parents=True)
            status = {"status": "FINISHED", "attempt": 1, "metrics": {"val_loss": 0.5}}
            (logs / "status.json").write_text(json.dumps({**status, "updated": time.time()}))
    rows = status_rows(slurm_cluster, project, "--all")
    assert len(rows) == 100
    states = [rows[f"{i:032x}"]["state"] for i in range(100)]
    assert states == ["UNKNOWN", "FINISHED"] * 50


def synthetic_record(run_id: str, index: int) -> dict[str, object]:
    return {
        "run_id": run_id,
        "entry": "shapes_demo:train",
        "args": {"steps": index},
        "profile": "local",
        "profile_values": {},
        "launch_id": f"20260101-000000-{index:06d}",
        "created": "2026-01-01T00:00:00+0000",
        "tracking_uri": "sqlite:///unused.db",
        "experiment": "many",
        "jobs": [
            {"job_id": str(SYNTHETIC_JOB_BASE + index), "submitted": "2026-01-01T00:00:00+0000"}
        ],
    }
