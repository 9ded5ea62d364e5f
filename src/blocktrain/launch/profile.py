"""Launch profiles: the Slurm resources and restart policy of a job, from ``slurm/<name>.yaml``.

A profile with ``executor: local`` runs its jobs on this machine, without Slurm; one with a
``container`` runs each task inside an image (:mod:`.containers.runtime`).

Validation reuses the argument checker, so a typo names the valid keys and a wrong type says
what was expected, with the file and line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from blocktrain.entry import bounded
from blocktrain.entry.argfiles import ArgSet, load_arg_file
from blocktrain.entry.argtypes import Mismatch, coerce
from blocktrain.errors import BlocktrainError
from blocktrain.launch.containers.runtime import Container

Unlimited = Literal["unlimited"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIGNALS = frozenset({"USR1", "USR2", "TERM", "INT", "HUP", "URG", "XCPU"})


class ProfileError(BlocktrainError):
    """A launch profile that cannot be used as written."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Restarts:
    """How many requeues each cause may spend; ``unlimited`` for no bound."""

    timeouts: int | Unlimited = "unlimited"
    preemptions: int | Unlimited = "unlimited"
    crashes: int | Unlimited = 0

    def __post_init__(self) -> None:
        for name in ("timeouts", "preemptions", "crashes"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 0:
                raise ValueError(f"restarts.{name} must be >= 0 or 'unlimited', got {value}")

    def allows(self, cause: str, spent: int) -> bool:
        budget = getattr(
            self, {"timeout": "timeouts", "preemption": "preemptions"}.get(cause, "crashes")
        )
        return budget == "unlimited" or spent < budget


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """Resources and policy of a job. GPUs per node is also the number of tasks per node."""

    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int = 1
    mem: str | None = None
    time: str | int = "01:00:00"
    """Slurm's formats (``HH:MM:SS``, ``D-HH:MM``, ...) or whole minutes."""
    signal: str = "USR2"
    """Sent ``signal_lead_s`` before the time limit; not USR1, which NCCL may catch."""
    signal_lead_s: int = 120
    restarts: Restarts = field(default_factory=Restarts)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: dict[str, str | int | bool] = field(default_factory=dict[str, str | int | bool])
    container: Container | None = None
    """Run each task inside this image (``runtime``, ``image``, ``binds``, ``env``)."""
    env: dict[str, str | int | float] = field(default_factory=dict[str, str | int | float])
    array_parallelism: int | None = None
    """Elements of a job array running at once (a local job: one at a time by default)."""
    executor: Literal["slurm", "local"] | None = None
    """Where the jobs run: the cluster, or this machine without Slurm (``--executor`` wins)."""

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.cpus_per_task < 1 or self.gpus_per_node < 0:
            raise ValueError("nodes and cpus_per_task must be >= 1, gpus_per_node >= 0")
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise ValueError("tasks_per_node must be >= 1")
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ValueError("with GPUs, tasks_per_node is gpus_per_node (one task per GPU)")
        time_minutes(self.time)
        if self.signal.removeprefix("SIG") not in _SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(sorted(_SIGNALS))}")
        bad = [name for name in self.env if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"env: {bad[0]!r} is not a valid environment variable name")
        if not 0 < self.signal_lead_s <= 65535:
            raise ValueError("signal_lead_s must be between 1 and 65535 seconds")

    @property
    def tasks(self) -> int:
        """Tasks per node: one per GPU, else ``tasks_per_node`` (default 1)."""
        return self.gpus_per_node or self.tasks_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks

    @property
    def signal_name(self) -> str:
        return self.signal.removeprefix("SIG")


def time_minutes(text: str | int) -> int:
    """Slurm's time formats in whole minutes, rounded up.

    ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``.
    """
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"time {text} must be a positive number of minutes")
        return text
    days, dash, clock = text.strip().rpartition("-")
    fields = clock.split(":")
    bad_days = bool(dash) and not days.isdigit()
    if not all(f.isdigit() for f in fields) or bad_days or len(fields) > 3:
        raise ValueError(f"time {text!r} is not a Slurm time such as 01:30:00 or 2-00:00:00")
    numbers = [int(f) for f in fields]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, m, sec = [*numbers, 0, 0][:3]
        seconds = ((int(days) * 24 + h) * 60 + m) * 60 + sec
    elif len(numbers) == 3:
        seconds = (numbers[0] * 60 + numbers[1]) * 60 + numbers[2]
    elif len(numbers) == 2:
        seconds = numbers[0] * 60 + numbers[1]
    else:
        seconds = numbers[0] * 60
    if seconds <= 0:
        raise ValueError(f"time {text!r} must be positive")
    return -(-seconds // 60)


def profile_path(root: Path, name: str) -> Path:
    return root / "slurm" / f"{name}.yaml"


def available_profiles(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "slurm").glob("*.yaml"))


def load_profile(root: Path, name: str, overrides: Iterable[str] = ()) -> Profile:
    """Read ``slurm/<name>.yaml`` and apply ``KEY=VALUE`` overrides (dotted keys, YAML values)."""
    path = profile_path(root, name)
    if not path.is_file():
        known = ", ".join(available_profiles(root)) or "none"
        raise ProfileError(f"no profile {name!r} ({path}); available: {known}")
    loaded = load_arg_file(path, "profile")
    for item in overrides:
        _apply_override(loaded, item)
    return _image_from_root(_build(loaded, path), root)


def _image_from_root(profile: Profile, root: Path) -> Profile:
    """A relative image path is the project folder's (not the job's working folder)."""
    box = profile.container
    if box is None or box.runtime == "podman" or Path(box.image).is_absolute():
        return profile
    image = str(root.resolve() / box.image)
    return dataclasses.replace(profile, container=dataclasses.replace(box, image=image))


def _apply_override(loaded: ArgSet, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ProfileError(
            f"profile override {item!r} must look like KEY=VALUE (e.g. time=02:00:00)"
        )
    try:
        value = bounded.safe_load(raw, f"--slurm {key}") if raw else None
    except bounded.MalformedError:
        value = raw  # over a limit is refused; not YAML is taken as text
    except bounded.OverLimitError as exc:
        raise ProfileError(str(exc)) from None
    path = tuple(key.split("."))
    target: dict[str, object] = loaded.values
    for part in path[:-1]:
        nested = target.setdefault(part, {})
        if not isinstance(nested, dict):
            raise ProfileError(f"profile override {item!r}: {part} is not a mapping")
        target = cast("dict[str, object]", nested)
    target[path[-1]] = value
    loaded.origins[path] = f"--slurm {item}"


_MOVED = ("image", "binds")
"""Keys of the profile's top level that moved under ``container``."""


def _build(loaded: ArgSet, path: Path) -> Profile:
    moved = [key for key in _MOVED if key in loaded.values]
    if moved:
        where = loaded.origin((moved[0],)) or str(path)
        raise ProfileError(
            f"{where}: {moved[0]}: the image and its binds moved under one key: "
            "container: {runtime: apptainer, image: IMAGE, binds: [...]} (docs/containers.md)"
        )
    try:
        container = loaded.values.get("container")
        if container is not None:  # checked alone: through the union, only "expected" is said
            coerce(container, Container, ("container",))
        profile = coerce(loaded.values, Profile)
    except Mismatch as exc:
        where = loaded.origin(exc.path) or str(path)
        key = ".".join(exc.path)
        raise ProfileError(f"{where}: {key + ': ' if key else ''}{exc.message}") from None
    return cast("Profile", profile)


def profile_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Profile)]


def as_dict(profile: Profile) -> dict[str, object]:
    """The profile as plain data, for records and MLflow tags."""
    return dataclasses.asdict(profile)
