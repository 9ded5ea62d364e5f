"""``slurm-stop``/``slurm-cancel``: a run id acts on every live job of the run, a job id on that
job alone. Slurm's answers are recorded stand-ins here; the commands against the real cluster
are tested in tests/integration/slurm."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blocktrain.cli import stop
from blocktrain.core.paths import Layout
from blocktrain.launch.records.store import JobEntry, RunRecord, write_record
from blocktrain.launch.slurm import commands
from blocktrain.launch.slurm.commands import QueueEntry

RUN = "0123456789abcdef0123456789abcdef"
OLD, NEW = "41", "42"


@dataclass
class Calls:
    scancel: list[list[str]] = field(default_factory=list[list[str]])
    killed: list[str] = field(default_factory=list[str])


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Calls:
    """A run with two live jobs (a relaunch went through while the old job still ran)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    write_record(
        Layout(tmp_path),
        RunRecord(
            run_id=RUN,
            entry="m:train",
            args={},
            profile="local",
            profile_values={"signal": "USR2"},
            launch_id="20260110-120000-abcdef",
            created="2026-01-10T12:00:00+0000",
            tracking_uri="sqlite:///x.db",
            experiment="proj",
            jobs=[JobEntry(job_id=OLD, submitted="a"), JobEntry(job_id=NEW, submitted="b")],
        ),
    )
    live = {OLD: "RUNNING", NEW: "RUNNING"}
    seen = Calls()

    def squeue(ids: list[str]) -> list[QueueEntry]:
        return [QueueEntry(i, live[i], "1:00", "node1") for i in ids if i in live]

    def run(argv: list[str]) -> str:
        assert argv[0] == "scancel"
        seen.scancel.append(argv)
        if not argv[1].startswith("--signal"):
            live.pop(argv[1], None)
        return ""

    monkeypatch.setattr(commands, "squeue", squeue)
    monkeypatch.setattr(commands, "run", run)
    monkeypatch.setattr(
        stop, "_mark_killed", lambda layout, record: seen.killed.append(record.run_id)
    )
    return seen


def test_cancel_of_a_run_cancels_every_live_job_and_marks_it_killed(calls, capsys):
    assert stop.cancel_main([RUN[:8]]) == 0
    assert sorted(c[1] for c in calls.scancel) == [OLD, NEW]
    assert calls.killed == [RUN]
    assert "job 41, 42 cancelled; run KILLED" in capsys.readouterr().out


def test_cancel_of_a_job_cancels_that_job_and_leaves_the_run_to_the_other(calls, capsys):
    assert stop.cancel_main([OLD]) == 0
    assert calls.scancel == [["scancel", OLD]]
    assert calls.killed == []
    assert "job 42 of the run still runs" in capsys.readouterr().out


def test_stop_of_a_run_signals_every_live_job(calls, capsys):
    assert stop.stop_main([RUN]) == 0
    assert sorted(c[2] for c in calls.scancel) == [OLD, NEW]
    assert all(c[1] == "--signal=USR2" for c in calls.scancel)
    assert (Layout(Path.cwd()).run(RUN).stop_marker).exists()
    assert "job 41, 42 checkpoints and stops" in capsys.readouterr().out
