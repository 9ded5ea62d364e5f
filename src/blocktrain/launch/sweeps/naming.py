"""Run names: the MLflow run name (tag ``mlflow.runName``) of each run of a launch, and of a
sweep's parent run.

A run is named ``<entry>-<stem>``: ``train-baseline`` for ``slurm-launch train --args
baseline.yaml``. The elements of a sweep add the values they set, ``train-ablation-lr=0.01-
width=16``; the runs of several ``--args`` files are named after each file, ``train-a``,
``train-b``. ``--name`` replaces the ``<entry>-<stem>`` prefix. Derived parts keep to letters,
digits and ``._,+=-``; a name longer than MLflow keeps is cut and ends with a hash of the whole,
so it stays unique and the same for the same launch.

Pure functions; nothing here reads files or talks to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence

from blocktrain.core.values import JSON
from blocktrain.errors import ArgsError
from blocktrain.launch.sweeps.expand import ArgumentSet

MAX_LENGTH = 250
"""MLflow's limit on a run name."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._,+=-]+")
_HASH_LENGTH = 8


def checked(name: str | None) -> str | None:
    """A ``--name`` as given, once it is one non-empty line of at most :data:`MAX_LENGTH`."""
    if name is None:
        return None
    if not name.strip() or "\n" in name or "\r" in name:
        raise ArgsError("--name must be one non-empty line, e.g. --name lr-sweep")
    if len(name) > MAX_LENGTH:
        raise ArgsError(f"--name is {len(name)} characters long; MLflow keeps {MAX_LENGTH} at most")
    return name


def run_names(entry: str, sets: Sequence[ArgumentSet], name: str | None = None) -> list[str]:
    """One name per argument set, in order; ``entry`` is the function's name (``train``)."""
    prefix = name or _join(entry, _common_stem(sets))
    if any(s.swept for s in sets):
        suffixes = swept_suffixes([s.swept for s in sets])
    elif len(sets) == 1:
        return [shortened(prefix)]
    elif _common_stem(sets) is None:
        suffixes = [safe(s.stem) for s in sets]
    else:
        suffixes = [""] * len(sets)
    return _unique([shortened(_join(prefix, suffix)) for suffix in suffixes])


def parent_name(entry: str, sets: Sequence[ArgumentSet], name: str | None = None) -> str:
    """The sweep's own run: ``--name``, else ``<entry>-<stem>`` (stems joined by ``+`` for
    several ``--args`` files)."""
    if name:
        return name
    stems = list(dict.fromkeys(safe(s.stem) for s in sets if s.stem))
    return shortened(_join(entry, "+".join(stems)))


def swept_suffixes(swept: Sequence[Mapping[str, JSON]]) -> list[str]:
    """``lr=0.01-width=16`` for each element: its own values, keys cut to their last part where
    that stays unambiguous; an element that sets nothing gets its index."""
    keys = list(dict.fromkeys(key for values in swept for key in values))
    short = _short_keys(keys)
    return [
        "-".join(f"{safe(short[k])}={value_text(v)}" for k, v in values.items()) or str(index)
        for index, values in enumerate(swept)
    ]


def value_text(value: JSON) -> str:
    """A value as a name shows it: ``0.01``, ``true``, ``a,b`` for a list."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, float | int) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, list):
        return ",".join(value_text(v) for v in value)
    return safe(json.dumps(value, separators=(",", ":")))


def safe(text: str) -> str:
    """``text`` with every run of other characters than letters, digits and ``._,+=-`` made
    one ``_``."""
    return _UNSAFE.sub("_", text).strip("_")


def shortened(name: str) -> str:
    """``name``, or its start and a hash of the whole when it is longer than MLflow keeps."""
    if len(name) <= MAX_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LENGTH]
    return f"{name[: MAX_LENGTH - _HASH_LENGTH - 1]}-{digest}"


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    return {
        key: leaf if leaves.count(leaf) == 1 else key
        for key, leaf in zip(keys, leaves, strict=True)
    }


def _common_stem(sets: Sequence[ArgumentSet]) -> str | None:
    """The stem every set shares (``""`` without files), else None."""
    stems = {s.stem for s in sets}
    return safe(stems.pop()) if len(stems) == 1 else None


def _join(*parts: str | None) -> str:
    return "-".join(part for part in parts if part)


def _unique(names: list[str]) -> list[str]:
    """Names as given, except that those shared by several runs get the run's index."""
    return [
        shortened(f"{name}-{index}") if names.count(name) > 1 else name
        for index, name in enumerate(names)
    ]
