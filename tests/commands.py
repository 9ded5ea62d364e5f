"""Run a command for a test, and fail the test with its output when it fails."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

_SHOWN = 4000  # characters of each stream shown when a command fails


def run(
    argv: tuple[str | Path, ...],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 60,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and capture its output; with ``check``, fail the test unless it exits 0."""
    done = subprocess.run(
        [str(part) for part in argv],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"`{' '.join(map(str, argv))}` exited with {done.returncode}:\n"
            f"{done.stdout[-_SHOWN:]}\n{done.stderr[-_SHOWN:]}",
            pytrace=False,
        )
    return done
