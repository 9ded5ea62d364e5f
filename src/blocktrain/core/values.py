"""Conversions of call arguments into plain JSON values and flat parameter dictionaries."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any, cast

JSON = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]


def to_jsonable(value: object) -> JSON:
    """A JSON-able image of ``value``: dataclasses become dicts, enums their names, paths str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        mapping = cast("Mapping[object, object]", value)
        return {str(k): to_jsonable(v) for k, v in mapping.items()}
    if isinstance(value, set | frozenset):
        return [to_jsonable(v) for v in sorted(cast("set[object]", value), key=repr)]
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in cast("list[object]", value)]
    return repr(value)


def bound_arguments(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, JSON]:
    """The full set of arguments of one call, defaults included, as JSON values."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    return {name: to_jsonable(value) for name, value in bound.arguments.items()}


def flatten(tree: Mapping[str, JSON], sep: str = ".") -> dict[str, JSON]:
    """``{"optim": {"lr": 0.1}}`` becomes ``{"optim.lr": 0.1}``; lists stay whole values."""
    flat: dict[str, JSON] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            for sub_key, sub_value in flatten(value, sep).items():
                flat[f"{key}{sep}{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat


def env_seconds(
    env: Mapping[str, str], name: str, default: float, error: type[Exception] = ValueError
) -> float:
    """The number of seconds in variable ``name`` (``default`` when unset or blank); raises
    ``error`` naming the variable when it is not a number."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise error(f"{name}={raw!r} is not a number of seconds") from None
