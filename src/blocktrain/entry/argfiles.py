"""Experiment YAML files: loaded with the line of every key, merged in order.

Kept apart from type validation so that both can be read and tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from blocktrain.entry import bounded
from blocktrain.errors import ArgsError

KeyPath = tuple[str, ...]


@dataclass(slots=True)
class ArgSet:
    """Argument values from one or more files, and where each key was last set."""

    values: dict[str, object] = field(default_factory=dict[str, object])
    origins: dict[KeyPath, str] = field(default_factory=dict[KeyPath, str])

    def origin(self, path: KeyPath) -> str | None:
        """``file:line`` of the deepest recorded prefix of ``path``."""
        for end in range(len(path), 0, -1):
            where = self.origins.get(path[:end])
            if where is not None:
                return where
        return None


def load_arg_files(paths: Iterable[str | Path]) -> ArgSet:
    """Load and deep-merge YAML mappings; a later file overrides an earlier one key by key."""
    merged = ArgSet()
    for path in paths:
        one = load_arg_file(path)
        merge_into(merged.values, one.values)
        merged.origins.update(one.origins)
    return merged


def load_arg_file(path: str | Path, what: str = "arguments file") -> ArgSet:
    """Load one YAML file whose top level is a mapping of argument names to values, within the
    limits of :mod:`.bounded`; an empty arguments file is refused (``what`` other than the
    default, such as a profile, may be empty)."""
    path = Path(path)
    text = bounded.read_text(path, what)
    loader, node = bounded.compose(text, str(path))
    try:
        if node is None and what != "arguments file":
            return ArgSet()
        if node is None:
            # An empty file is a mistake (a file not saved, the wrong file), not a request for
            # every default: a run launched from it would train with arguments nobody chose.
            raise ArgsError(
                f"{path}: the arguments file is empty; write the arguments in it, or leave "
                "out --args to run with the entry function's defaults"
            )
        if not isinstance(node, yaml.MappingNode):
            line = node.start_mark.line + 1
            raise ArgsError(
                f"{path}:{line}: the file must be a mapping of argument names to values"
            )
        result = ArgSet()
        result.values = _mapping(loader, node, str(path), (), result.origins)
    except yaml.YAMLError as exc:  # a value the constructor cannot build (a bad timestamp)
        raise ArgsError(f"{path}: malformed YAML: {' '.join(str(exc).split())}") from None
    else:
        return result
    finally:
        loader.dispose()


def _mapping(
    loader: yaml.SafeLoader,
    node: yaml.MappingNode,
    file: str,
    prefix: KeyPath,
    origins: dict[KeyPath, str],
) -> dict[str, object]:
    out: dict[str, object] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = loader.construct_object(key_node, deep=True)  # pyright: ignore[reportUnknownMemberType]
        if not isinstance(key, str):
            raise ArgsError(f"{file}:{line}: key {key!r} must be a name (a string)")
        if key in out:
            raise ArgsError(f"{file}:{line}: key {key!r} appears twice; keep one")
        path = (*prefix, key)
        origins[path] = f"{file}:{line}"
        if isinstance(value_node, yaml.MappingNode):
            out[key] = _mapping(loader, value_node, file, path, origins)
        else:
            out[key] = loader.construct_object(value_node, deep=True)  # pyright: ignore[reportUnknownMemberType]
    return out


def merge_into(base: dict[str, object], update: Mapping[str, object]) -> None:
    """Deep-merge ``update`` into ``base``: mappings key by key, anything else replaced."""
    for key, value in update.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merge_into(current, value)  # pyright: ignore[reportUnknownArgumentType]
        else:
            base[key] = value
