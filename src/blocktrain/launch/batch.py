"""The batch script around the tasks: pure rendering, checked against golden files.

submitit renders the ``#SBATCH`` header and the ``srun`` line; blocktrain adds the container
wrapping of each task, the environment, and the teardown that requeues the job when its tasks
asked for it. The teardown runs in the batch shell, outside any container, because it needs
Slurm's commands.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from blocktrain.launch.profile import Profile, time_minutes


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchPlan:
    """Everything the executor needs, derived from a profile and a launch folder."""

    job_name: str
    folder: Path
    python: str
    parameters: dict[str, object]


def task_python(profile: Profile, project_root: Path, host_python: str) -> str:
    """The command that starts Python in each task: inside the image when the profile has one."""
    if not profile.image:
        return shlex.quote(host_python)
    words = ["apptainer", "exec"]
    if profile.gpus_per_node:
        words.append("--nv")
    # The project folder keeps its path inside the container: code copy, logs, checkpoints.
    binds = [f"{project_root}:{project_root}", *profile.binds]
    for bind in binds:
        words += ["--bind", bind]
    words += ["--pwd", str(project_root), profile.image, "python"]
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


def teardown_lines(requeue_dir: Path) -> list[str]:
    """Shell lines after ``srun``: requeue this job (or array element) when rank 0 asked to."""
    marker_dir = shlex.quote(str(requeue_dir))
    return [
        "blocktrain_status=$?",
        'blocktrain_key="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"',
        'blocktrain_key="${blocktrain_key:-$SLURM_JOB_ID}"',
        f'if [ -e {marker_dir}/"$blocktrain_key" ]; then',
        f'    rm -f {marker_dir}/"$blocktrain_key"',
        '    echo "blocktrain: requeueing $blocktrain_key"',
        '    scontrol requeue "$blocktrain_key"',
        "fi",
        'exit "$blocktrain_status"',
    ]


def plan(
    profile: Profile,
    *,
    job_name: str,
    folder: Path,
    project_root: Path,
    host_python: str,
    code_paths: list[str],
    requeue_dir: Path,
) -> BatchPlan:
    """The executor parameters (submitit's names) for a profile."""
    parameters: dict[str, object] = {
        "job_name": job_name,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks,
        "cpus_per_task": profile.cpus_per_task,
        "time": time_minutes(profile.time),
        "signal_delay_s": profile.signal_lead_s,
        "setup": setup_lines(code_paths, profile.env),
        "teardown": teardown_lines(requeue_dir),
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
        python=task_python(profile, project_root, host_python),
        parameters=parameters,
    )


def render(batch: BatchPlan, array_size: int | None = None) -> str:
    """The batch script submitit would write for this plan (for --dry-run and golden tests)."""
    from submitit.slurm.slurm import _make_sbatch_string  # pyright: ignore[reportPrivateUsage]

    command = " ".join(
        [batch.python, "-u -m submitit.core._submit", shlex.quote(str(batch.folder))]
    )
    extra = {"map_count": array_size} if array_size and array_size > 1 else {}
    return _make_sbatch_string(command=command, folder=batch.folder, **batch.parameters, **extra)  # pyright: ignore[reportArgumentType]
