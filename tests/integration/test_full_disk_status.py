"""A job that fills its disk still says how it ended: status.json (what slurm-status shows)
is rewritten over its own blocks when no new file can be created. On a real full file system:
a small tmpfs mounted for the test (root, as CI runs)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocktrain.core.atomic import write_text_atomic, write_text_or_overwrite
from blocktrain.launch import statusview

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="No space left"):  # noqa: PT012
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(disk / "probe.json", "{}" * 3000)


def test_the_last_status_reaches_status_json_on_a_full_disk(small_disk: Path):
    status = small_disk / "status.json"
    write_text_atomic(status, json.dumps({"run_id": "r", "attempt": 2, "status": "RUNNING"}))
    fill(small_disk)
    reason = "OSError: [Errno 28] No space left on device: 'checkpoints/step-000000080.pt'"
    full = {"run_id": "r", "attempt": 2, "status": "FAILED", "reason": reason}
    metrics = {f"metric_{i}": float(i) for i in range(400)}  # more than the block it has

    written = write_text_or_overwrite(
        status, json.dumps({**full, "metrics": metrics}), json.dumps(full)
    )

    assert written
    shown = statusview.local_status(status.read_text(), None, None)
    assert (shown.status, shown.reason, shown.attempt) == ("FAILED", reason, 2)
    assert not list(small_disk.glob(".*status.json*"))  # no temporary file left behind


def test_a_last_word_longer_than_the_files_blocks_is_refused_not_torn(small_disk: Path):
    status = small_disk / "status.json"
    write_text_atomic(status, json.dumps({"status": "RUNNING"}))
    fill(small_disk)
    assert not write_text_or_overwrite(status, "x" * 9000, "y" * 9000)
    assert json.loads(status.read_text()) == {"status": "RUNNING"}
