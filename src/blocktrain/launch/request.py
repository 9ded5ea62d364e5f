"""What a launch is asked to do and what it did: the launcher's request and result types.

Plain data, no I/O: :mod:`blocktrain.cli.launch` builds a :class:`LaunchRequest` from its
command line, :func:`blocktrain.launch.launcher.launch` returns a :class:`LaunchResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blocktrain.launch.sweeps import expand


@dataclass(frozen=True, kw_only=True, slots=True)
class LaunchRequest:
    """What to launch: the arguments of ``slurm-launch``, typed."""

    entry: str
    """A function of the project's entry module (``train``), or ``module:function``."""
    args: tuple[Path, ...] = ()
    """Argument files, one run each (several: one job array)."""
    base: tuple[Path, ...] = ()
    """Argument files merged under every run, in order."""
    sweep: Path | None = None
    """A sweep file listing the argument sets, instead of ``args``."""
    overrides: tuple[str, ...] = ()
    """``KEY=VALUE`` over the arguments of every run (dotted keys, YAML values)."""
    profile: str | None = None
    """``slurm/<profile>.yaml``; by default ``local``, or a relaunched run's own profile."""
    slurm: tuple[str, ...] = ()
    """``KEY=VALUE`` over the profile's values."""
    run_id: str | None = None
    """Relaunch this run with its recorded arguments, instead of starting new runs."""
    name: str | None = None
    """The MLflow run name, instead of ``<entry>-<file stem>``; for several runs, the start of
    each one's name (see :mod:`blocktrain.launch.sweeps.naming`). A relaunch keeps the run's
    name."""
    best: str | None = None
    """``METRIC:min`` or ``METRIC:max``: how a sweep's summary picks its best run, over the
    sweep file's ``best`` and the entry function's ``monitor``/``mode``."""
    module: str | None = None
    """The entry module, instead of ``entry-module`` under pyproject.toml's [tool.blocktrain]."""
    dry_run: bool = False
    """Validate and render the batch script; create and submit nothing."""
    executor: str | None = None
    """``slurm`` or ``local`` (this machine, without Slurm); by default the profile's, else a
    relaunched run's own, else ``slurm``."""

    def argument_sets(self) -> list[expand.ArgumentSet]:
        """The argument files and overrides of each run (not read yet)."""
        overrides = expand.dotted(self.overrides)
        return expand.argument_sets(self.base, self.args, self.sweep, overrides)


@dataclass(frozen=True, kw_only=True, slots=True)
class LaunchedRun:
    run_id: str
    job_id: str
    logs: Path
    """The run's log folder, where an ``attempt-N`` folder appears as each attempt starts."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LaunchResult:
    runs: tuple[LaunchedRun, ...] = ()
    """The submitted runs in the order of their argument sets; none for a dry run."""
    relaunched_after: int | None = None
    """For a relaunch: the attempts the run had made before."""
    plan: str | None = None
    """For a dry run: a ``#`` line per argument set, then the batch script."""
