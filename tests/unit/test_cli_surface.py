"""The public surface of the slurm-* commands: a new, renamed or dropped option must be a
deliberate change of this test. slurm-status and slurm-log must also start without the heavy
libraries."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from blocktrain.cli import launch, log, status, stop


def surface(parser: argparse.ArgumentParser) -> tuple[set[str], list[str]]:
    """Option strings, and positional names in order."""
    options = {s for action in parser._actions for s in action.option_strings}
    positionals = [a.metavar or a.dest for a in parser._actions if not a.option_strings]
    return options, [str(p) for p in positionals]


def test_slurm_status_options() -> None:
    assert surface(status.build_parser()) == (
        {"-h", "--help", "--all", "--json", "--watch"},
        ["RUN|JOB"],
    )


def test_slurm_log_options() -> None:
    assert surface(log.build_parser()) == (
        {"-h", "--help", "--err", "--follow", "--rank", "--node", "--attempt"},
        ["RUN|JOB"],
    )


def test_slurm_launch_options() -> None:
    assert surface(launch.build_parser()) == (
        {"-h", "--help", "--args", "--base", "--sweep", "--set", "--profile", "--slurm",
         "--run-id", "--name", "--best", "--module", "--dry-run", "--executor"},
        ["ENTRY"],
    )  # fmt: skip


@pytest.mark.parametrize("main", [stop.stop_main, stop.cancel_main])
def test_stop_and_cancel_take_the_run_id_prefixes_find_runs_takes(
    main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "run id (or 6+ character prefix) or Slurm job id" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "usage"),
    [
        (status, "usage: slurm-status [-h] [--all] [--json] [--watch [SECONDS]] [RUN|JOB ...]"),
        (
            log,
            (
                "usage: slurm-log [-h] [--err] [--follow] [--rank N] [--node NODE]\n"
                "                 [--attempt N]\n                 RUN|JOB"
            ),
        ),
    ],
)
def test_help_shows_the_usage(
    module: object, usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main = getattr(module, "main")  # noqa: B009 - both modules, one test
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(usage + "\n")


def test_watch_takes_positive_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    parser = status.build_parser()
    assert parser.parse_args(["--watch"]).watch == 5.0
    assert parser.parse_args(["--watch", "0.5", "abc123"]).watch == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--watch", "0"])
    assert "not a positive number of seconds" in capsys.readouterr().err


HEAVY = ("torch", "mlflow", "submitit", "defopt", "yaml", "blocktrain.entry")
PROBE = """
import sys
from blocktrain.cli import log, status
codes = status.main(["--all"]), log.main(["nothing"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {top} or m in {full})
print(codes, heavy)
"""


def test_the_commands_import_nothing_heavy(tmp_path: Path) -> None:
    """Run in a fresh interpreter: this test process may have imported anything already."""
    (tmp_path / "pyproject.toml").write_text("[tool.blocktrain]\n")
    top = {m for m in HEAVY if "." not in m}
    full = {m for m in HEAVY if "." in m}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(top=top, full=full)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[-1] == "(0, 2) []"
