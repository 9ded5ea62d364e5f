"""A requeue asked on a full disk: the marker's existence is what the batch script and the
local supervisor act on, so it is left even when no JSON can be written."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from blocktrain.restart import RestartConfig, requeue


def test_a_full_disk_still_leaves_the_marker_and_names_what_was_not_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = RestartConfig(run_dir=tmp_path / "run", marker_dir=tmp_path / "markers", job_key="7")
    (tmp_path / "run").mkdir()

    def full(path: Path, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(requeue, "_write_json", full)
    requeue.request_requeue(config, "crash", {})
    assert requeue.requeue_asked(tmp_path / "markers", "7")
    assert "its count was not recorded" in capsys.readouterr().err
    assert not (tmp_path / "markers" / "7").exists()  # acted on once
