"""The batch script around the tasks: pure rendering, checked against golden files.

The ``#SBATCH`` header and the ``srun`` line are submitit's (its executor writes the script it
submits; :func:`render` writes the same text for ``--dry-run``); blocktrain adds the container
wrapping of each task (rendered by :mod:`..containers.runtime`), the environment, and the
teardown that requeues the job when its tasks asked for it
(:func:`blocktrain.restart.requeue.teardown_lines`). The teardown runs in the batch shell,
outside any container, because it needs Slurm's commands.

``srun --kill-on-bad-exit=1`` ends the other tasks once one fails: without it a rank killed
while the others wait for it (the rendezvous, a collective) leaves them waiting for the process
group's timeout, half an hour. Each task runs under a shell that writes its exit status first
(:func:`blocktrain.restart.requeue.task_wrapper`), so that the tasks srun ends can tell a
killed rank from a preemption (:mod:`blocktrain.restart.endings`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from blocktrain.launch.containers import runtime
from blocktrain.launch.profile import Profile, time_minutes
from blocktrain.restart import requeue


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchPlan:
    """Everything the executor needs, derived from a profile and a launch folder."""

    job_name: str
    folder: Path
    python: str
    """The command that starts Python in a task (in the image when the profile has one)."""
    parameters: dict[str, object]
    task_wrapper: tuple[str, ...] = ()
    """Words before ``python`` in a Slurm task (not in a local one, which has no srun)."""

    @property
    def slurm_python(self) -> str:
        """What submitit puts after ``srun`` and its options: the wrapper, then ``python``."""
        return " ".join([shlex.join(self.task_wrapper), self.python]).strip()


def task_python(
    profile: Profile, project_root: Path, host_python: str, data: Sequence[str] = ()
) -> str:
    """The command that starts Python in each task: inside the image when the profile has one.

    ``data`` are the data cache's folders, mounted in the container with the project folder.
    """
    if profile.container is None:
        return shlex.quote(host_python)
    words = runtime.command(
        profile.container,
        project_root=str(project_root),
        data=data,
        gpus=profile.gpus_per_node > 0,
        job_env=list(profile.env),
    )
    return shlex.join(words)


def setup_lines(
    code_paths: list[str], env: Mapping[str, str | int | float] | None = None
) -> list[str]:
    """Shell lines before ``srun``: the profile's environment, the frozen code on the path.

    The variables are exported in the batch shell, before any task starts Python, because
    some (``OMP_NUM_THREADS``) only take effect when set before torch is imported.
    """
    lines = [f"export {name}={shlex.quote(str(value))}" for name, value in (env or {}).items()]
    joined = ":".join(code_paths)
    return [*lines, f'export PYTHONPATH={shlex.quote(joined)}"${{PYTHONPATH:+:$PYTHONPATH}}"']


def plan(
    profile: Profile,
    *,
    job_name: str,
    folder: Path,
    project_root: Path,
    host_python: str,
    code_paths: list[str],
    requeue_dir: Path,
    data: Sequence[str] | None = None,
) -> BatchPlan:
    """The executor parameters (submitit's names) for a profile.

    ``data``: the data cache's folders a containerised task mounts; by default those this
    process's environment names (a job inherits the environment it is submitted from).
    """
    if data is None:
        data = runtime.data_dirs(os.environ, str(Path.home()))
    parameters: dict[str, object] = {
        "job_name": job_name,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks,
        "cpus_per_task": profile.cpus_per_task,
        "time": time_minutes(profile.time),
        "signal_delay_s": profile.signal_lead_s,
        "setup": setup_lines(code_paths, profile.env),
        "teardown": requeue.teardown_lines(requeue_dir),
        "srun_args": ["--kill-on-bad-exit=1"],  # see the module docstring
        "wckey": None,  # submitit would tag every job "submitit"
        # The signal goes to the tasks (not the batch shell), which checkpoint and ask for a
        # requeue; --requeue lets Slurm requeue the job after a preemption or a node failure.
        "additional_parameters": {
            "signal": f"{profile.signal_name}@{profile.signal_lead_s}",
            "requeue": True,
            **profile.sbatch,
        },
    }
    optional = {
        "partition": profile.partition,
        "gpus_per_node": profile.gpus_per_node or None,
        "mem": profile.mem,
        "qos": profile.qos,
        "account": profile.account,
        "constraint": profile.constraint,
        "array_parallelism": profile.array_parallelism,
    }
    parameters.update({k: v for k, v in optional.items() if v is not None})
    return BatchPlan(
        job_name=job_name,
        folder=folder,
        python=task_python(profile, project_root, host_python, data),
        parameters=parameters,
        task_wrapper=tuple(requeue.task_wrapper(requeue_dir)),
    )


def render(batch: BatchPlan, array_size: int | None = None) -> str:
    """The batch script submitit writes for this plan (for --dry-run and golden tests).

    Rendered here the way submitit renders it, not through submitit's private renderer;
    tests/unit/test_launch_plan.py checks that submitit submits this very text for the same
    plan, and the Slurm integration test that a submitted job runs it.
    """
    array = array_size if array_size and array_size > 1 else None
    logs = batch.folder / ("%A_%a_%t_log" if array else "%j_%t_log")  # submitit's file names
    out, err = f"{logs}.out", f"{logs}.err"
    srun_args = _strings(batch.parameters.get("srun_args"))
    srun = shlex.join(["srun", "--unbuffered", "--output", out, "--error", err, *srun_args])
    folder = shlex.quote(str(batch.folder))
    command = f"{batch.slurm_python} -u -m submitit.core._submit {folder}"
    return "\n".join([
        "#!/bin/bash", "", "# Parameters", *sbatch_lines(batch.parameters, array, out, err),
        "", "# setup", *_strings(batch.parameters.get("setup")),
        "", "# command", "export SUBMITIT_EXECUTOR=slurm", f"{srun} {command}", "",
        "", "# teardown", *_strings(batch.parameters.get("teardown")),
    ])  # fmt: skip


_NOT_SBATCH = frozenset(
    {
        "setup",
        "teardown",
        "signal_delay_s",
        "additional_parameters",
        "array_parallelism",
        "srun_args",
    }
)
"""Executor parameters that are no ``#SBATCH`` line of their own."""
_ARRAY_PARALLELISM = 256  # submitit's default


def sbatch_lines(
    parameters: Mapping[str, object], array_size: int | None, out: str, err: str
) -> list[str]:
    """The ``#SBATCH`` lines, sorted by name; ``additional_parameters`` win over the rest."""
    flags = {k: v for k, v in parameters.items() if v is not None and k not in _NOT_SBATCH}
    # submitit's fixed signal; the profile's, in additional_parameters, replaces it below.
    flags["signal"] = f"USR2@{parameters.get('signal_delay_s')}"
    if array_size is not None:
        limit = parameters.get("array_parallelism")
        parallel = min(array_size, limit if isinstance(limit, int) else _ARRAY_PARALLELISM)
        flags["array"] = f"0-{array_size - 1}%{parallel}"
    flags["output"] = out.replace("%t", "0")
    flags["error"] = err.replace("%t", "0")
    flags["open-mode"] = "append"
    flags.update(_mapping(parameters.get("additional_parameters")))
    return [_sbatch_flag(name, flags[name]) for name in sorted(flags)]


def _sbatch_flag(name: str, value: object) -> str:
    """``#SBATCH --name=value``; ``True`` is the bare flag."""
    flag = f"#SBATCH --{name.replace('_', '-')}"
    return flag if value is True else f"{flag}={shlex.quote(str(value))}"


def _strings(value: object) -> list[str]:
    return [str(line) for line in cast("list[object]", value)] if isinstance(value, list) else []


def _mapping(value: object) -> dict[str, object]:
    return cast("dict[str, object]", value) if isinstance(value, dict) else {}
