"""``slurm-launch``: submit an entry function of the project as a Slurm job.

Argument parsing, printing and exit codes only; the launch itself (validation, records, MLflow
runs, submission and its rollback) is :mod:`blocktrain.launch.launcher`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from blocktrain.core.paths import project_root
from blocktrain.errors import BlocktrainError, Terminated
from blocktrain.launch.launcher import LaunchRequest, LaunchResult, launch

DESCRIPTION = """\
Submit an entry function of this project as a Slurm job.

  slurm-launch train --args experiments/baseline.yaml
  slurm-launch train --args a.yaml --args b.yaml          # two runs, one job array
  slurm-launch train --sweep experiments/ablation.yaml    # a sweep file, one job array
  slurm-launch train --run-id 3f2a9c...                   # relaunch a run from its last checkpoint
  slurm-launch train --args a.yaml --executor local       # on this machine, without Slurm

ENTRY is a function of the project's entry module ([tool.blocktrain] entry-module in
pyproject.toml, or --module), or module:function.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurm-launch",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "entry", metavar="ENTRY", help="entry function (train, evaluate, ...) or module:function"
    )
    parser.add_argument(
        "--args",
        dest="each",
        action="append",
        type=Path,
        default=[],
        metavar="FILE.yaml",
        help="an argument set; each --args file is one run (several: one job array)",
    )
    parser.add_argument(
        "--base",
        action="append",
        type=Path,
        default=[],
        metavar="FILE.yaml",
        help="arguments merged under every run (repeatable, in order)",
    )
    parser.add_argument(
        "--sweep", type=Path, metavar="FILE.yaml", help="a sweep file listing argument sets"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an argument in every run, e.g. --set optim.lr=0.1",
    )
    parser.add_argument(
        "--profile", help="slurm/PROFILE.yaml (default: local; for --run-id, the run's own)"
    )
    parser.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile value, e.g. --slurm time=02:00:00 --slurm nodes=2",
    )
    parser.add_argument("--run-id", help="relaunch this run with its recorded arguments")
    parser.add_argument(
        "--name",
        help="MLflow run name (default: ENTRY-FILE_STEM); for a sweep or several --args files, "
        "the start of each run's name",
    )
    parser.add_argument(
        "--best",
        metavar="METRIC:min|max",
        help="how a sweep's summary picks its best run (default: the sweep file's best, else "
        "the entry's monitor and mode arguments)",
    )
    parser.add_argument(
        "--module", help="the entry module, instead of pyproject's [tool.blocktrain]"
    )
    parser.add_argument(
        "--executor",
        metavar="slurm|local",
        help="where the jobs run: the cluster, or this machine without Slurm "
        "(default: the profile's executor, for --run-id the run's own, else slurm)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the batch script; create and submit nothing",
    )
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    # A SIGTERM (a closed terminal, a timeout around the command) unwinds like Ctrl-C, so
    # that a launch cut short removes what it created instead of leaving half a run.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = launch(request(options), root=project_root(Path.cwd()), progress=_say)
    except BlocktrainError as exc:
        sys.stderr.write(f"slurm-launch: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except Terminated:
        sys.stderr.write("slurm-launch: terminated; what a new launch had created was removed\n")
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(report(result))
    return 0


def _say(line: str) -> None:
    sys.stderr.write(f"slurm-launch: {line}\n")


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated(f"received signal {signum}")


def request(options: argparse.Namespace) -> LaunchRequest:
    return LaunchRequest(
        entry=options.entry,
        args=tuple(options.each),
        base=tuple(options.base),
        sweep=options.sweep,
        overrides=tuple(options.overrides),
        profile=options.profile,
        slurm=tuple(options.slurm),
        run_id=options.run_id,
        name=options.name,
        best=options.best,
        module=options.module,
        dry_run=options.dry_run,
        executor=options.executor,
    )


def report(result: LaunchResult) -> str:
    """The batch script of a dry run, else one line per submitted run."""
    if result.plan is not None:
        return result.plan
    if result.relaunched_after is not None:
        return "".join(
            f"run {r.run_id}  job {r.job_id}  relaunched after attempt {result.relaunched_after}\n"
            for r in result.runs
        )
    return "".join(
        f"run {r.run_id}  job {r.job_id}  logs {r.logs}  (slurm-log {r.run_id[:8]})\n"
        for r in result.runs
    )


if __name__ == "__main__":
    raise SystemExit(main())
