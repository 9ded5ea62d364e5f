"""The local cluster from scripts/local-slurm does what the product relies on: multi-task
jobs with srun, accounting through slurmdbd, requeue, and an idempotent `up`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from slurm_service import SlurmCluster  # the fixture's type; pytest provides the fixture itself

pytestmark = pytest.mark.integration

TIMEOUT_S = 90.0  # a requeued job waits cred_expire + 1 = 11 s before it starts again


T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = TIMEOUT_S) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)


def sbatch(cluster: SlurmCluster, *args: str) -> str:
    return cluster.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]


def accounted_state(cluster: SlurmCluster, job_id: str) -> str | None:
    """The job's state in slurmdbd (sacct), None while it has no record yet."""
    done = cluster.run(
        "sacct", "--noheader", "--parsable2", "--allocations", "-o", "JobID,State", "-j", job_id
    )
    states = dict(line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
    return states.get(job_id)


def wait_for_state(cluster: SlurmCluster, job_id: str, wanted: str) -> str:
    def probe() -> str | None:
        state = accounted_state(cluster, job_id)
        if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            pytest.fail(f"job {job_id} ended {state}, not {wanted}", pytrace=False)
        return state if state == wanted else None

    return wait_until(f"job {job_id} to be {wanted} in sacct", probe)


@pytest.fixture(scope="module")
def hostname_job(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("hostname") / "job.out"
    job_id = sbatch(slurm_cluster, "--ntasks=2", f"--output={out}", "--wrap", "srun hostname")
    return job_id, out


def test_srun_runs_two_tasks(slurm_cluster: SlurmCluster, hostname_job: tuple[str, Path]) -> None:
    job_id, out = hostname_job
    wait_for_state(slurm_cluster, job_id, "COMPLETED")
    assert len(out.read_text().splitlines()) == 2


def test_sacct_reports_completed(
    slurm_cluster: SlurmCluster, hostname_job: tuple[str, Path]
) -> None:
    job_id, _ = hostname_job
    assert wait_for_state(slurm_cluster, job_id, "COMPLETED") == "COMPLETED"
    steps = slurm_cluster.run("sacct", "--parsable2", "-o", "JobID,State", "-j", job_id).stdout
    assert f"{job_id}.0|COMPLETED" in steps.splitlines()


def test_scontrol_requeue_restarts_the_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        'echo "SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}"\n'
        'if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then exit 0; fi\n'
        "sleep 300\n"
    )
    job_id = sbatch(slurm_cluster, "--open-mode=append", f"--output={out}", str(script))
    wait_until(
        "the first run to start",
        lambda: True if out.exists() and "SLURM_RESTART_COUNT=0" in out.read_text() else None,
    )
    slurm_cluster.run("scontrol", "requeue", job_id)
    wait_for_state(slurm_cluster, job_id, "COMPLETED")
    lines = [line for line in out.read_text().splitlines() if line.startswith("SLURM_RESTART")]
    assert lines == ["SLURM_RESTART_COUNT=0", "SLURM_RESTART_COUNT=1"]


def test_up_again_changes_nothing(slurm_cluster: SlurmCluster) -> None:
    before = slurm_cluster.script("status").stdout
    again = slurm_cluster.script("up")
    assert "already up" in again.stdout
    assert slurm_cluster.script("status").stdout == before


def test_status_exits_0_when_up(slurm_cluster: SlurmCluster) -> None:
    status = slurm_cluster.script("status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    for daemon in ("mariadb", "slurmdbd", "slurmctld", "slurmd"):
        assert f"{daemon}:" in status.stdout
    assert "down" not in status.stdout


def test_env_points_clients_at_the_cluster(slurm_cluster: SlurmCluster) -> None:
    env = slurm_cluster.script("env").stdout
    assert f"export SLURM_CONF={slurm_cluster.conf}" in env.splitlines()
