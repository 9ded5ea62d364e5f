"""The restart protocol is in charge before the user's module is imported.

A task's entry module may import torch or Lightning at its top, which takes a minute on a busy
node. A time-limit signal (or a preemption's SIGTERM) in that time must reach blocktrain's
handlers: without them the signal's default action kills the task (``--executor local``), or
submitit's own handler requeues the job outside the run's budgets. These tests run the real
worker in a process of its own, with an entry module that sleeps while it is imported, and
signal it during that import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLOW_ENTRY = """
import os, pathlib, time
pathlib.Path(os.environ["IMPORT_STARTED"]).touch()
time.sleep(4)  # a heavy import (torch, Lightning) on a loaded node

from blocktrain import restart


def train() -> None:
    while not restart.should_stop():
        time.sleep(0.02)
    restart.stop_now()
"""

RUN_WORKER = """
import sys
from blocktrain.restart.jobspec import JobSpec
from blocktrain.restart.worker import Worker

code, run, logs, markers = sys.argv[1:5]
Worker(JobSpec(run_id="0" * 32, entry="slowentry:train", args={}, code_dir=code, run_dir=run,
               log_dir=logs, requeue_dir=markers))()
"""


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


def _wait_for(check, timeout_s: float) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, "timed out"
        time.sleep(0.002)
    return time.monotonic() - start


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM], ids=["USR2", "TERM"])
def test_a_signal_during_the_entry_modules_import_is_the_protocols(tmp_path: Path, signum: int):
    code, run, logs, markers = (tmp_path / name for name in ("code", "run", "logs", "markers"))
    for folder in (code, run, logs):
        folder.mkdir()
    (code / "slowentry.py").write_text(SLOW_ENTRY)
    started = tmp_path / "import-started"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "BLOCKTRAIN_"))} | {
        "IMPORT_STARTED": str(started)
    }
    begun = time.monotonic()
    task = subprocess.Popen(
        [sys.executable, "-c", RUN_WORKER, str(code), str(run), str(logs), str(markers)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: started.exists() or _catches(task.pid, signal.SIGUSR2), 30)
        window = time.monotonic() - begun
        assert _catches(task.pid, signal.SIGUSR2), "the entry module was imported first"
        _wait_for(started.exists, 30)
        assert task.poll() is None
        task.send_signal(signum)
        _, err = task.communicate(timeout=60)
    finally:
        task.kill()
    print(f"restart protocol installed {window:.3f} s after the task started")
    # The window is the interpreter's start and blocktrain's own imports: no user code.
    assert window < 1.0
    assert task.returncode == 0, err
    assert json.loads((markers / "local").read_text()) == {"cause": "preemption"}
    assert json.loads((run / "restarts.json").read_text()) == {"preemption": 1}
