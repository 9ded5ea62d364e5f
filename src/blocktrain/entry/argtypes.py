# Reflection over arbitrary annotations yields partially unknown types by nature.
# pyright: reportUnknownArgumentType=false, reportUnknownVariableType=false
"""Checking and converting YAML values against type annotations.

Covers what entry functions use: scalars, paths, enums (by name), literals, optionals and
unions, lists, tuples, sets, dicts, and dataclasses (filled from nested mappings).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

KeyPath = tuple[str, ...]


class Mismatch(Exception):  # noqa: N818 - internal, always converted to ArgsError
    """A value that does not fit; ``path`` is relative to the parameter being checked."""

    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def describe(tp: object) -> str:
    """A short human name for an annotation: ``int``, ``list of float``, ``one of 'a', 'b'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return describe(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [describe(a) for a in args if a is not type(None)]
        suffix = " or null" if type(None) in args else ""
        return " or ".join(names) + suffix
    if origin in (list, tuple, set, frozenset) or origin is typing.Sequence:
        return f"list of {describe(args[0])}" if args else "list"
    if origin in (dict, Mapping):
        return f"mapping of {describe(args[1])}" if len(args) == 2 else "mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(n) for n in tp.__members__)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"mapping for {tp.__name__}"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    return getattr(tp, "__name__", str(tp))


def coerce(value: object, tp: object, path: KeyPath = ()) -> object:
    """Return ``value`` converted to ``tp``, or raise :class:`Mismatch` saying what was expected."""
    if tp is Any or tp is object or tp is dataclasses.MISSING:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return coerce(value, args[0], path)
    if origin is typing.Literal:
        return _literal(value, args, tp, path)
    if origin in (typing.Union, types.UnionType):
        return _union(value, args, tp, path)
    if origin is not None:
        return _generic(value, origin, args, tp, path)
    if isinstance(tp, type):
        return _plain(value, tp, path)
    return value


def _fail(value: object, tp: object, path: KeyPath) -> Mismatch:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return Mismatch(path, f"expected {describe(tp)}, got {type(value).__name__} {shown}")


def _literal(value: object, choices: tuple[object, ...], tp: object, path: KeyPath) -> object:
    for choice in choices:
        if value == choice and type(value) is type(choice):
            return choice
    raise _fail(value, tp, path)


def _union(value: object, members: tuple[object, ...], tp: object, path: KeyPath) -> object:
    if value is None:
        if type(None) in members:
            return None
        raise _fail(value, tp, path)
    for member in members:
        if member is type(None):
            continue
        try:
            return coerce(value, member, path)
        except Mismatch:
            continue
    raise _fail(value, tp, path)


def _generic(
    value: object, origin: object, args: tuple[object, ...], tp: object, path: KeyPath
) -> object:
    if origin is dict or origin is Mapping:
        if not isinstance(value, Mapping):
            raise _fail(value, tp, path)
        key_tp, value_tp = args if len(args) == 2 else (Any, Any)
        return {
            coerce(k, key_tp, path): coerce(v, value_tp, (*path, str(k))) for k, v in value.items()
        }
    if not isinstance(value, list | tuple):
        raise _fail(value, tp, path)
    items: list[object] = list(value)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(items) != len(args):
            raise Mismatch(path, f"expected {len(args)} items, got {len(items)}")
        return tuple(
            coerce(v, t, (*path, str(i))) for i, (v, t) in enumerate(zip(items, args, strict=True))
        )
    item_tp = args[0] if args else Any
    converted = [coerce(v, item_tp, (*path, str(i))) for i, v in enumerate(items)]
    if origin in (tuple, set, frozenset):
        return origin(converted)  # pyright: ignore[reportCallIssue]
    return converted


def _plain(value: object, tp: type, path: KeyPath) -> object:
    if tp is bool or tp is str:
        if type(value) is not tp:
            raise _fail(value, tp, path)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(value, tp, path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(value, tp, path)
        return float(value)
    if issubclass(tp, enum.Enum):
        if isinstance(value, str) and value in tp.__members__:
            return tp.__members__[value]
        raise _fail(value, tp, path)
    if dataclasses.is_dataclass(tp):
        return _dataclass(value, tp, path)
    if isinstance(value, tp):
        return value
    if isinstance(value, str):
        # defopt's rule: any other class is built from its one-string constructor.
        try:
            return tp(value)
        except (TypeError, ValueError) as exc:
            raise Mismatch(path, f"cannot build {tp.__name__} from {value!r}: {exc}") from None
    raise _fail(value, tp, path)


def _dataclass(value: object, tp: type, path: KeyPath) -> object:
    if not isinstance(value, Mapping):
        raise _fail(value, tp, path)
    given: Mapping[str, object] = value
    fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
    hints = typing.get_type_hints(tp)
    unknown = [k for k in given if k not in fields]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise Mismatch(
            (*path, str(unknown[0])),
            f"unknown field for {tp.__name__}{hint}; valid fields: {', '.join(fields)}",
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in given
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise Mismatch(path, f"missing required field(s) of {tp.__name__}: {', '.join(missing)}")
    kwargs = {k: coerce(v, hints.get(k, Any), (*path, k)) for k, v in given.items()}
    try:
        return tp(**kwargs)
    except (TypeError, ValueError) as exc:
        # __post_init__ validation belongs to the user's dataclass; report it where it applies.
        raise Mismatch(path, f"invalid {tp.__name__}: {exc}") from None
