"""Where the cache levels are and where one entry's files go: :class:`CacheConfig` (read from
the environment) and :class:`Entry` (the paths of one source's entry in one level).

The node-local level is usually the job's scratch, which only each node's task knows
(``$SLURM_TMPDIR``, a different folder on each node): the level paths may name environment
variables, expanded from the task's own environment, so that one launch profile
(``DATA_EPHEMERAL_PATH: $SLURM_TMPDIR/data``) gives every node its own level.

Pure paths and settings: must not touch the file system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from blocktrain.core import envvars
from blocktrain.errors import BlocktrainError

Verify = Literal["stat", "full"]
LevelName = Literal["persistent", "ephemeral"]
_TRUE = {"1", "true", "yes", "on"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheConfig:
    """Where the two levels are and how entries are checked; see :meth:`from_environ`."""

    persistent: Path
    ephemeral: Path | None = None
    dev: bool = False
    verify: Verify = "stat"

    def __post_init__(self) -> None:
        if self.verify not in ("stat", "full"):
            raise BlocktrainError(f"cache verify must be 'stat' or 'full', not {self.verify!r}")

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> CacheConfig:
        """``DATA_PATH`` (default ``$XDG_CACHE_HOME/blocktrain/data``), ``DATA_EPHEMERAL_PATH``
        (unset: one level), ``BLOCKTRAIN_DATA_DEV`` and ``BLOCKTRAIN_DATA_VERIFY``. ``$NAME``
        and ``${NAME}`` in the two paths are taken from ``env`` (:func:`expand`)."""
        cache_home = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        persistent = expand("DATA_PATH", env) or str(Path(cache_home) / "blocktrain" / "data")
        ephemeral = expand("DATA_EPHEMERAL_PATH", env) or None
        verify = env.get(envvars.DATA_VERIFY.name, "").strip() or "stat"
        if verify not in ("stat", "full"):
            raise BlocktrainError(f"{envvars.DATA_VERIFY.name}={verify!r} must be 'stat' or 'full'")
        return cls(
            persistent=Path(persistent).expanduser(),
            ephemeral=Path(ephemeral).expanduser() if ephemeral else None,
            dev=env.get(envvars.DATA_DEV.name, "").strip().lower() in _TRUE,
            verify=verify,
        )

    def levels(self) -> dict[LevelName, Path]:
        found: dict[LevelName, Path] = {"persistent": self.persistent}
        if self.ephemeral is not None:
            found["ephemeral"] = self.ephemeral
        return found


def expand(name: str, env: Mapping[str, str]) -> str:
    """``env[name]`` with each ``$VAR`` or ``${VAR}`` in it replaced by ``env[VAR]``; empty
    when unset. A variable that is unset or empty is an error: a level on a wrong path (say,
    ``/data`` for ``$SLURM_TMPDIR/data`` outside a job) would fill where no one expects."""
    value = env.get(name, "").strip()

    def value_of(match: re.Match[str]) -> str:
        variable = match.group(1) or match.group(2)
        if not env.get(variable):
            raise BlocktrainError(
                f"{name}={value!r} names ${variable}, which is not set here; set it, or give "
                f"{name} a path without it"
            )
        return env[variable]

    return _VARIABLE.sub(value_of, value)


@dataclass(frozen=True, slots=True)
class Entry:
    """The paths of one source's entry in one level."""

    level: Path
    name: str

    @property
    def data(self) -> Path:
        return self.level / self.name

    @property
    def manifest(self) -> Path:
        return self.level / f"{self.name}.entry.json"

    @property
    def journal(self) -> Path:
        return self.level / f"{self.name}.journal"

    @property
    def lock(self) -> Path:
        return self.level / ".locks" / f"{self.name}.lock"
