"""A real Slurm cluster with accounting for the integration tests.

The `slurm_cluster` fixture (tests/conftest.py) starts a single-node one with
`scripts/local-slurm up` in a fresh directory per test session and removes it with
`down --purge` at the end, whatever the tests did; tests/integration/multinode starts one of
several nodes the same way (`start_cluster(..., nodes=3)`). If the cluster cannot start, every
test that uses it fails with the script's error and the daemons' log tails.
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import commands

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "local-slurm"
UP_TIMEOUT_S = 600  # the first `up` on a new machine installs the Debian packages


@dataclass(frozen=True, kw_only=True)
class SlurmCluster:
    """A running local cluster: pass `env` to every Slurm client, or use `run`."""

    state_dir: Path
    conf: Path
    env: dict[str, str]
    nodes: int = 1

    def run(
        self, *cmd: str | Path, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (sbatch, squeue, ...) against this cluster and capture its output.

        It runs in the cluster's state folder: a job submitted without ``--output`` writes
        Slurm's default ``slurm-<job>.out`` in the submit folder, which must not be the
        repository the suite runs in.
        """
        return commands.run(cmd, env=self.env, cwd=self.state_dir, timeout=timeout, check=check)

    def script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `scripts/local-slurm ARGS --dir STATE_DIR`."""
        return self.run(
            sys.executable,
            SCRIPT,
            *args,
            "--dir",
            self.state_dir,
            check=check,
            timeout=UP_TIMEOUT_S,
        )


def log_tails(state_dir: Path, lines: int = 20) -> str:
    parts = []
    for log in sorted((state_dir / "log").glob("*")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        if text:
            parts.append(f"--- {log.name} ---\n" + "\n".join(text))
    return "\n".join(parts)


def start_cluster(state_dir: Path, *, nodes: int = 1, cpus: int | None = None) -> SlurmCluster:
    """Start a cluster in ``state_dir`` (of ``nodes`` nodes offering ``cpus`` CPUs each); fail
    the test with the daemons' logs if it does not."""
    cluster = SlurmCluster(
        state_dir=state_dir,
        conf=state_dir / "etc" / "slurm.conf",
        env={**os.environ, "SLURM_CONF": str(state_dir / "etc" / "slurm.conf")},
        nodes=nodes,
    )
    shape = ["--nodes", str(nodes)] if nodes > 1 else []
    shape += ["--cpus", str(cpus)] if cpus is not None else []
    up = cluster.script("up", *shape, check=False)
    if up.returncode != 0:
        stop_cluster(cluster)
        pytest.fail(
            f"the local Slurm cluster did not start (exit {up.returncode}):\n"
            f"{up.stdout}{up.stderr}\n{log_tails(state_dir)}",
            pytrace=False,
        )
    return cluster


def stop_cluster(cluster: SlurmCluster) -> None:
    """Stop the daemons and remove the state, whatever the tests did."""
    down = cluster.script("down", "--purge", check=False)
    if down.returncode != 0:
        sys.stderr.write(f"local-slurm down failed:\n{down.stdout}{down.stderr}\n")
