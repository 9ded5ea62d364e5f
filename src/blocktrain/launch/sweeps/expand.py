"""Argument sets of one launch: one per ``--args`` file, or the elements of a sweep file.

A sweep file lists argument sets for an ablation study; they become one Slurm job array::

    base: [baseline.yaml]      # files merged under every element (relative to this file)
    runs:                      # explicit elements ...
      - {width: 16}
      - {width: 32, augment: false}
    grid:                      # ... and/or the cartesian product of these values
      lr: [0.1, 0.01]
    best: {metric: val_loss, mode: min}   # how the sweep's summary picks its best run

Each element knows what names its run (:mod:`.naming`): the stem of its own ``--args`` file,
or of the sweep file, and the values it sets itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from blocktrain.core.values import JSON, flatten
from blocktrain.entry import bounded
from blocktrain.entry.argfiles import merge_into
from blocktrain.errors import ArgsError

_SWEEP_KEYS = ("base", "runs", "grid", "best")
_MODES = ("min", "max")

MAX_RUNS = 10_000
"""Runs one launch may create: each is an MLflow run and an array element (Slurm's own
``MaxArraySize`` is 1001 unless the site raised it)."""


@dataclass(frozen=True, slots=True)
class Best:
    """Which logged metric makes a sweep's best run, and whether smaller or larger wins."""

    metric: str
    mode: Literal["min", "max"] = "min"


@dataclass(frozen=True, kw_only=True, slots=True)
class ArgumentSet:
    """Files merged in order, then overrides on top; ``label`` names it in messages."""

    files: tuple[Path, ...] = ()
    overrides: dict[str, object] = field(default_factory=dict[str, object])
    label: str = ""
    stem: str = ""
    """The file that names the run: its own ``--args`` file's stem, else the sweep file's, else
    the last base file's; empty without files."""
    swept: dict[str, JSON] = field(default_factory=dict[str, JSON])
    """What a sweep element sets itself, flattened (``optim.lr``); empty outside sweeps."""
    best: Best | None = None
    """The sweep file's ``best``, if it has one."""


def parse_best(text: str) -> Best:
    """``--best val_loss:min`` (``:min`` when the mode is left out) as a :class:`Best`."""
    metric, _, mode = text.rpartition(":") if ":" in text else (text, "", "min")
    if not metric or mode not in _MODES:
        raise ArgsError(f"--best {text!r} must look like METRIC:min or METRIC:max")
    return Best(metric, "max" if mode == "max" else "min")


def dotted(items: Sequence[str]) -> dict[str, object]:
    """``["optim.lr=0.1", "tags=[a, b]"]`` to a nested mapping with YAML-typed values."""
    flat: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ArgsError(f"--set {item!r} must look like KEY=VALUE (e.g. --set optim.lr=0.1)")
        try:
            flat[key] = bounded.safe_load(raw, f"--set {key}") if raw else None
        except bounded.MalformedError:
            flat[key] = raw  # over a limit is refused; not YAML is taken as text
    return _nest(flat)


def argument_sets(
    base: Sequence[Path], each: Sequence[Path], sweep: Path | None, overrides: Mapping[str, object]
) -> list[ArgumentSet]:
    """The launch's elements: ``--args`` files, sweep elements, or just the base files."""
    if each and sweep is not None:
        raise ArgsError("give either --args files or a --sweep file, not both")
    if sweep is not None:
        sets = _sweep_sets(sweep)
    elif each:
        sets = [ArgumentSet(files=(f,), label=str(f), stem=f.stem) for f in each]
    else:
        sets = [ArgumentSet(label="defaults", stem=base[-1].stem if base else "")]
    return [
        ArgumentSet(
            files=(*base, *s.files),
            overrides=_merged(s.overrides, overrides),
            label=s.label,
            stem=s.stem,
            swept=s.swept,
            best=s.best,
        )
        for s in sets
    ]


def _merged(first: Mapping[str, object], second: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    merge_into(out, first)
    merge_into(out, second)
    return out


def _sweep_sets(path: Path) -> list[ArgumentSet]:
    raw = bounded.safe_load(bounded.read_text(path, "sweep file"), str(path))
    if not isinstance(raw, dict):
        raise ArgsError(f"{path}: a sweep file is a mapping with keys {', '.join(_SWEEP_KEYS)}")
    sweep = cast("dict[str, object]", raw)
    unknown = [k for k in sweep if k not in _SWEEP_KEYS]
    if unknown:
        raise ArgsError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(_SWEEP_KEYS)}")
    base = tuple(path.parent / str(f) for f in _list(sweep.get("base"), path, "base"))
    elements = [_mapping(e, path, "runs") for e in _list(sweep.get("runs"), path, "runs")]
    elements += _grid(sweep.get("grid"), path)
    if len(elements) > MAX_RUNS:
        raise ArgsError(
            f"{path}: the sweep makes {len(elements)} runs, more than the {MAX_RUNS} one launch "
            "may create; split it into several sweep files"
        )
    if not elements:
        raise ArgsError(f"{path}: the sweep has no elements; add `runs:` or `grid:`")
    best = _best(sweep.get("best"), path)
    return [
        ArgumentSet(
            files=base,
            overrides=e,
            label=f"{path.name}[{i}]",
            stem=path.stem,
            swept=flatten(cast("dict[str, JSON]", e)),
            best=best,
        )
        for i, e in enumerate(elements)
    ]


def _best(value: object, path: Path) -> Best | None:
    if value is None:
        return None
    best = cast("dict[str, object]", value) if isinstance(value, dict) else {}
    metric, mode = best.get("metric"), best.get("mode", "min")
    unknown = [k for k in best if k not in ("metric", "mode")]
    if unknown or not isinstance(metric, str) or not metric or mode not in _MODES:
        raise ArgsError(
            f"{path}: best must look like {{metric: val_loss, mode: min}} (mode min or max)"
        )
    return Best(metric, "max" if mode == "max" else "min")


def _grid(grid: object, path: Path) -> list[dict[str, object]]:
    if grid is None:
        return []
    axes = _mapping(grid, path, "grid")
    names = list(axes)
    values = [_list(axes[n], path, f"grid.{n}") for n in names]
    size = math.prod(len(v) for v in values)
    if size > MAX_RUNS:  # counted before the product is built
        shape = " x ".join(str(len(v)) for v in values)
        raise ArgsError(
            f"{path}: the grid makes {size} runs ({shape}), more than the {MAX_RUNS} one launch "
            "may create; split it into several sweep files, or search the space instead"
        )
    return [_nest(dict(zip(names, combo, strict=True))) for combo in itertools.product(*values)]


def _nest(flat: Mapping[str, object]) -> dict[str, object]:
    tree: dict[str, object] = {}
    for key, value in flat.items():
        nested: object = value
        for part in reversed(key.split(".")[1:]):
            nested = {part: nested}
        merge_into(tree, {key.split(".")[0]: nested})
    return tree


def _list(value: object, path: Path, key: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ArgsError(f"{path}: {key} must be a list")
    return cast("list[object]", value)


def _mapping(value: object, path: Path, key: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ArgsError(f"{path}: each entry of {key} must be a mapping of arguments")
    return cast("dict[str, object]", value)
