"""Jobs without Slurm (``--executor local``): their state file and the supervisor's decisions.

A local job is one supervisor process per submission that plays the part of ``sbatch`` and
``srun``: it starts each task with the variables a Slurm task sees, applies the time limit and
its restart signal, and acts on the requeue marker the tasks leave, as the batch script's
teardown does. This module holds what it decides, as pure functions of plain data:

- :class:`LocalJob`, the JSON state file (what to run, and each element's state) that
  ``slurm-status`` reads instead of ``squeue``/``sacct``;
- :func:`task_env`, the environment of one task;
- :func:`outcome`, what the supervisor does when the tasks of an element have exited;
- :func:`deadlines` and :func:`startable`, when to signal and whom to start;
- :func:`queue_entry`, an element in ``squeue``'s shape.

Must not start, signal or wait for processes, or read files: that is :mod:`.supervisor`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from blocktrain.core import envvars
from blocktrain.core.values import JSON
from blocktrain.launch.slurm.commands import QueueEntry

PREFIX = "L"
"""Local job ids are ``L7`` (``L7_3`` for element 3), never mistaken for a Slurm job id."""
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED"})
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
REQUEUE = "REQUEUE"
"""What :func:`outcome` returns when the tasks asked for another attempt."""
NODE = "localhost"


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalPlan:
    """What a local job runs: fixed at submission."""

    job_id: str
    """``L7``; its elements are ``L7_0``, ``L7_1``, ... when ``array``."""
    array: bool
    specs: list[dict[str, JSON]]
    """One :class:`~blocktrain.restart.jobspec.JobSpec` (as a dict) per element."""
    job_name: str
    tasks: int
    """Processes per element (the profile's world size; all on this machine)."""
    cpus_per_task: int
    python: list[str]
    """The words that start Python in a task (inside the image when the profile has one)."""
    env: dict[str, str]
    """The profile's variables."""
    code_paths: list[str]
    """The frozen code, first on each task's ``PYTHONPATH``."""
    output: str
    """The folder of the per-task output files."""
    project_root: str
    requeue_dir: str
    time_limit_s: int
    signal: str
    lead_s: int
    parallel: int = 1
    """Elements running at once."""


@dataclass(kw_only=True, slots=True)
class Element:
    """One element (the only one of a plain job): Slurm's view of it."""

    state: str = "PENDING"
    restart_count: int = 0
    started: float | None = None
    """When the current attempt started (epoch seconds)."""
    ended: float | None = None
    exit_code: int | None = None
    pids: list[int] = field(default_factory=list[int])
    """The tasks of the current attempt, by rank."""


@dataclass(kw_only=True, slots=True)
class LocalJob:
    plan: LocalPlan
    elements: list[Element]
    submitted: float
    supervisor_pid: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> LocalJob:
        raw = cast("dict[str, object]", json.loads(text))
        plan = LocalPlan(**cast("dict[str, object]", raw["plan"]))  # pyright: ignore[reportArgumentType]
        elements = [Element(**e) for e in cast("list[dict[str, object]]", raw["elements"])]  # pyright: ignore[reportArgumentType]
        return LocalJob(
            plan=plan,
            elements=elements,
            submitted=float(cast("float", raw["submitted"])),
            supervisor_pid=cast("int | None", raw.get("supervisor_pid")),
        )

    def key(self, index: int) -> str:
        return element_key(self.plan.job_id, index, array=self.plan.array)

    @property
    def finished(self) -> bool:
        return all(e.state in FINAL for e in self.elements)


def job_id(number: int) -> str:
    return f"{PREFIX}{number}"


def is_local(job_id: str) -> bool:
    """Whether a job id names a local job (``L7``, ``L7_3``) rather than a Slurm one."""
    return job_id.startswith(PREFIX) and job_id[1:].split("_", 1)[0].isdigit()


def element_key(job_id: str, index: int, *, array: bool) -> str:
    """The id of an element, as a requeue marker and the run record name it."""
    return f"{job_id}_{index}" if array else job_id


def element_index(key: str) -> int:
    """``L7_3`` -> 3; ``L7`` -> 0."""
    _, sep, index = key.partition("_")
    return int(index) if sep else 0


def task_env(
    plan: LocalPlan, index: int, rank: int, restart_count: int, port: int
) -> dict[str, str]:
    """The variables one task gets on top of the supervisor's (whose ``SLURM_*`` it drops):
    what ``srun`` would give it, the profile's, and the frozen code on the path."""
    key = element_key(plan.job_id, index, array=plan.array)
    array = {"SLURM_ARRAY_JOB_ID": plan.job_id, "SLURM_ARRAY_TASK_ID": str(index)}
    slurm = {
        "SLURM_JOB_ID": key, "SLURM_JOBID": key, "SLURM_JOB_NAME": plan.job_name,
        "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
        "SLURM_NTASKS": str(plan.tasks), "SLURM_STEP_NUM_TASKS": str(plan.tasks),
        "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": NODE,
        "SLURM_STEP_NODELIST": NODE, "SLURM_NODELIST": NODE,
        "SLURM_CPUS_PER_TASK": str(plan.cpus_per_task),
        "SLURM_RESTART_COUNT": str(restart_count), "SLURM_SUBMIT_DIR": plan.project_root,
        **(array if plan.array else {}),
    }  # fmt: skip
    # A job id like L7 gives no port of its own: the supervisor finds one per attempt.
    place = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return {**plan.env, **slurm, **place, envvars.EXECUTOR.name: "local"}


def merged_env(
    inherited: Mapping[str, str], own: Mapping[str, str], code_paths: Sequence[str]
) -> dict[str, str]:
    """A task's whole environment: the supervisor's without ``SLURM_*``, then its own, with
    the frozen code first on ``PYTHONPATH`` (as the batch script's set-up exports it)."""
    env = {k: v for k, v in inherited.items() if not k.startswith("SLURM_")}
    env.update(own)
    path = [*code_paths, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    env["PYTHONPATH"] = ":".join(path)
    return env


def outcome(
    exit_codes: Sequence[int], *, requeue_asked: bool, cancelled: bool, timed_out: bool
) -> str:
    """What follows once every task of an element has exited: :data:`REQUEUE` or a final state.

    As under Slurm: a cancelled job stays cancelled and one killed at its time limit ends
    TIMEOUT, whatever the tasks asked; otherwise the requeue marker wins over the exit codes
    (a crash within its budget asks for another attempt too).
    """
    if cancelled:
        return "CANCELLED"
    if timed_out:
        return "TIMEOUT"
    if requeue_asked:
        return REQUEUE
    return "COMPLETED" if all(code == 0 for code in exit_codes) else "FAILED"


def exit_code(exit_codes: Sequence[int]) -> int:
    """The element's exit code: the first task's that is not 0 (a signal as 128 + its number)."""
    failed = [128 - code if code < 0 else code for code in exit_codes if code != 0]
    return failed[0] if failed else 0


def deadlines(started: float, time_limit_s: float, lead_s: float) -> tuple[float, float]:
    """When the restart signal goes to the tasks, and when they are killed (the limit)."""
    return started + max(0.0, time_limit_s - lead_s), started + time_limit_s


def startable(elements: Sequence[Element], parallel: int) -> list[int]:
    """The pending elements to start now, in index order, so that at most ``parallel`` run."""
    running = sum(e.state in ("RUNNING", "REQUEUED") for e in elements)
    pending = [i for i, e in enumerate(elements) if e.state == "PENDING"]
    return pending[: max(0, parallel - running)]


def queue_entry(job: LocalJob, index: int, now: float, *, supervised: bool) -> QueueEntry:
    """An element as ``squeue``/``sacct`` would show it. A job whose supervisor is gone while
    the element is not final (killed, machine restarted) shows FAILED."""
    element = job.elements[index]
    state = element.state
    if state in ACTIVE and not supervised:
        state = "FAILED"
    started = element.started
    end = element.ended if state in FINAL and element.ended is not None else now
    elapsed = elapsed_text(end - started) if started is not None else "0:00"
    nodes = NODE if started is not None else ""
    return QueueEntry(job.key(index), state, elapsed, nodes)


def abandoned(job: LocalJob, *, supervised: bool) -> list[int]:
    """The elements a supervisor that is gone left unfinished (killed with its machine): no
    one will run, requeue or end them. A job whose supervisor has not taken over yet has none.
    """
    if supervised or job.supervisor_pid is None:
        return []
    return [i for i, e in enumerate(job.elements) if e.state in ACTIVE]


def mark_lost(job: LocalJob, indices: Sequence[int], now: float) -> None:
    """End abandoned elements as FAILED, as Slurm ends the jobs of a node it lost."""
    for index in indices:
        element = job.elements[index]
        element.state, element.ended, element.pids = "FAILED", now, []


def elapsed_text(seconds: float) -> str:
    """Slurm's elapsed format: ``M:SS``, ``H:MM:SS``, ``D-HH:MM:SS``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"
