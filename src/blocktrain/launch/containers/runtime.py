"""How a task starts inside a container: the profile's ``container`` key and one renderer per
runtime.

A task runs ``python`` from the image; the project folder (code copy, run, launch and log
folders), the data cache and the profile's binds are mounted at their own paths, and the
working folder is the project's. The renderers are pure functions of their inputs:
:func:`command` gives the words that replace the host's Python in the ``srun`` line (and in a
local job's tasks). GPUs are passed through as each runtime does it: ``--nv`` for Apptainer,
CDI's ``nvidia.com/gpu=all`` for Podman, and nothing at run time for Charliecloud, whose
images get the host's driver libraries once with ``ch-fromhost --nvidia``.

Must not run a runtime, look at files or read the environment: :mod:`.images` checks that the
runtime and the image exist and takes the image's digest; :mod:`..slurm.batch` places the words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal, get_args

from blocktrain.core import envvars

Runtime = Literal["apptainer", "podman", "charliecloud"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
EXECUTABLES: dict[str, str] = {
    "apptainer": "apptainer",
    "podman": "podman",
    "charliecloud": "ch-run",
}
"""The program each runtime starts a task with."""

PODMAN_FORWARDED = (
    "SLURM_*", "SUBMITIT_*", f"{envvars.PREFIX}*", "MLFLOW_*", "DATA_*", "S3_*", "AWS_*",
    "NCCL_*", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "PYTHONPATH", "USER", "TZ",
)  # fmt: skip
"""Variables a Podman task takes from the job (Podman passes none by default; Apptainer and
Charliecloud pass them all). ``NAME*`` takes every variable with that prefix."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Bind:
    """A host folder mounted in the container."""

    source: str
    target: str
    read_only: bool = False

    @staticmethod
    def parse(text: str) -> Bind:
        """``SRC``, ``SRC:DST`` or ``SRC:DST:ro`` (``rw`` is the default), absolute paths."""
        parts = text.split(":")
        if len(parts) > 3 or not all(parts[:2]):
            raise ValueError(f"bind {text!r} must look like SRC, SRC:DST or SRC:DST:ro")
        source = parts[0]
        target = parts[1] if len(parts) > 1 else source
        mode = parts[2] if len(parts) > 2 else "rw"
        if mode not in ("ro", "rw"):
            raise ValueError(f"bind {text!r}: the mode after DST is 'ro' or 'rw', not {mode!r}")
        for path in (source, target):
            if not PurePosixPath(path).is_absolute():
                raise ValueError(f"bind {text!r}: {path!r} must be an absolute path")
        return Bind(source, target, mode == "ro")


@dataclass(frozen=True, kw_only=True, slots=True)
class Container:
    """The profile's ``container``: which runtime, which image, what else to mount and set."""

    runtime: Runtime
    image: str
    """A ``.sif`` file (Apptainer), an image directory or ``.sqfs`` file (Charliecloud), or an
    image reference in Podman's storage (``localhost/name:tag``)."""
    binds: list[str] = field(default_factory=list[str])
    """``SRC[:DST[:ro]]``, besides the project folder and the data cache."""
    env: dict[str, str | int | float] = field(default_factory=dict[str, str | int | float])
    """Variables set inside the container only."""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:  # a Container built in code, not from a profile
            raise ValueError(f"runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if not self.image:
            raise ValueError("image must name the image to run")
        parsed = [Bind.parse(text) for text in self.binds]
        if self.runtime == "charliecloud" and any(b.read_only for b in parsed):
            raise ValueError("charliecloud's ch-run mounts binds read-write: drop ':ro'")
        bad = [name for name in self.env if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"env: {bad[0]!r} is not a valid environment variable name")

    @property
    def executable(self) -> str:
        return EXECUTABLES[self.runtime]


def data_dirs(environ: Mapping[str, str], home: str) -> list[str]:
    """The data cache folder a task mounts: ``DATA_PATH`` (by default
    ``$XDG_CACHE_HOME/blocktrain/data``, as :mod:`blocktrain.data.cache` reads it).

    Not the node-local level (``DATA_EPHEMERAL_PATH``): it is each node's scratch, often named
    through the task's own variables (``$SLURM_TMPDIR/data``) and made by the task; like a
    ``DATA_PATH`` naming variables, it is left to the profile's binds (or ``/tmp``, which
    Apptainer and Charliecloud share with the host).
    """
    cache_home = environ.get("XDG_CACHE_HOME") or f"{home}/.cache"
    persistent = environ.get("DATA_PATH") or f"{cache_home}/blocktrain/data"
    return [] if "$" in persistent else [persistent]


def task_binds(container: Container, project_root: str, data: Sequence[str]) -> list[Bind]:
    """The project folder, the data cache, then the profile's binds, less those already
    visible through an earlier one (a data cache inside the project folder comes with it)."""
    binds = [Bind(project_root, project_root), *(Bind(d, d) for d in data)]
    binds += [Bind.parse(text) for text in container.binds]
    kept: list[Bind] = []
    for bind in binds:
        if not any(_covers(outer, bind) for outer in kept):
            kept.append(bind)
    return kept


def _covers(outer: Bind, inner: Bind) -> bool:
    """The same target, or a host folder inside ``outer``'s, both at their host paths.

    ch-run refuses a bind whose target enters an earlier bind, so such a bind is dropped.
    """
    if inner.target == outer.target:
        return True
    same_paths = outer.source == outer.target and inner.source == inner.target
    return same_paths and PurePosixPath(inner.target).is_relative_to(outer.target)


def command(
    container: Container,
    *,
    project_root: str,
    data: Sequence[str],
    gpus: bool,
    job_env: Sequence[str] = (),
) -> list[str]:
    """The words that start the image's Python in a task, in the project folder.

    ``job_env``: the names the batch script exports (the profile's ``env``), which Podman is
    told to pass in besides :data:`PODMAN_FORWARDED`.
    """
    binds = task_binds(container, project_root, data)
    env = {name: str(value) for name, value in container.env.items()}
    if container.runtime == "podman":
        return podman(container.image, binds, env, project_root, gpus, job_env=job_env)
    render = _RENDERERS[container.runtime]
    return render(container.image, binds, env, project_root, gpus)


def apptainer(
    image: str, binds: Sequence[Bind], env: Mapping[str, str], workdir: str, gpus: bool
) -> list[str]:
    """``apptainer exec``: the host environment passes in; signals and the exit status pass
    through its starter."""
    words = ["apptainer", "exec", *(["--nv"] if gpus else [])]
    for bind in binds:
        words += ["--bind", _spec(bind, ":ro")]
    words += ["--pwd", workdir]
    for name, value in env.items():
        words += ["--env", f"{name}={value}"]
    return [*words, image, "python"]


def podman(
    image: str,
    binds: Sequence[Bind],
    env: Mapping[str, str],
    workdir: str,
    gpus: bool,
    *,
    job_env: Sequence[str] = (),
) -> list[str]:
    """``podman run``: the host's network and IPC (rendezvous, shared memory), the user's own
    id on written files, ``--init`` so that the signals Podman proxies reach Python."""
    words = ["podman", "run", "--rm", "--init", "--network=host", "--ipc=host"]
    words += ["--userns=keep-id", "--ulimit=host"]
    if gpus:
        words += ["--device", "nvidia.com/gpu=all", "--security-opt=label=disable"]
    for bind in binds:
        words += ["--volume", _spec(bind, ":ro")]
    words += ["--workdir", workdir]
    for pattern in (*PODMAN_FORWARDED, *(n for n in job_env if n not in PODMAN_FORWARDED)):
        words += ["--env", pattern]
    for name, value in env.items():
        words += ["--env", f"{name}={value}"]
    return [*words, image, "python"]


def charliecloud(
    image: str, binds: Sequence[Bind], env: Mapping[str, str], workdir: str, gpus: bool
) -> list[str]:
    """``ch-run``: it execs the command in its own process, so Slurm's signals reach Python and
    its exit status is the job's. ``--set-env`` alone applies the image's ENV (its ``PATH``
    finds the image's Python); ``--home`` mounts the user's home, as Apptainer does.
    Each bind's target must exist in the image (the image builder makes them)."""
    del gpus  # the image carries the driver libraries (ch-fromhost --nvidia)
    words = ["ch-run", "--home", "--set-env"]
    for name, value in env.items():
        words.append(f"--set-env={name}={value}")
    words += [f"--bind={_spec(bind, '')}" for bind in binds]
    return [*words, f"--cd={workdir}", image, "--", "python"]


def _spec(bind: Bind, read_only: str) -> str:
    return f"{bind.source}:{bind.target}{read_only if bind.read_only else ''}"


_RENDERERS = {"apptainer": apptainer, "charliecloud": charliecloud}
