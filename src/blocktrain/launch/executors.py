"""Where a launch's jobs run: ``slurm`` (the cluster) or ``local`` (this machine, no Slurm).

The executor of a launch is ``--executor``, else the profile's ``executor``, else (for a
relaunch) that of the run's latest job, else ``slurm``. Each job in a run record names its
executor, so that the ``slurm-*`` commands ask the right one about it.
"""

from __future__ import annotations

from blocktrain.core.paths import Layout
from blocktrain.errors import BlocktrainError
from blocktrain.launch.slurm.submit import Scheduler, SlurmScheduler

EXECUTORS = ("slurm", "local")
DEFAULT = "slurm"


def checked(name: str | None) -> str | None:
    """``name`` if it is an executor (or None); else the one-line error naming the choices."""
    if name is None or name in EXECUTORS:
        return name
    raise BlocktrainError(
        f"unknown executor {name!r}; use --executor slurm (the cluster) or --executor local "
        "(this machine, without Slurm)"
    )


def chosen(*candidates: str | None) -> str:
    """The first executor given, in order of precedence; ``slurm`` when none is."""
    return next((c for c in candidates if c), DEFAULT)


def scheduler_for(executor: str, layout: Layout) -> Scheduler:
    if executor == "local":
        from blocktrain.launch.local.scheduler import LocalScheduler

        return LocalScheduler(layout)
    return SlurmScheduler()
