"""YAML a user hands in, read within limits: every argument file, sweep file, profile and flag.

A YAML file can be small and still unbounded: nested aliases expand exponentially (a
"billion laughs" file of a few lines becomes gigabytes once walked), deep nesting overflows
the parser's recursion, and control characters stop the reader with a multi-line error. Each
limit here is checked before the cost is paid, and each refusal is one line naming the limit
and the fix.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from blocktrain.errors import ArgsError

MAX_FILE_BYTES = 4 * 1024 * 1024
"""An arguments, sweep or profile file larger than this is not a hand-written experiment."""
MAX_DEPTH = 64
"""Nesting of mappings and lists."""
MAX_NODES = 200_000
"""Values, keys and containers, counting each alias as the copy it stands for."""
MAX_VALUE_CHARS = 1_000_000
"""One string value (a path, a prompt, a list of tags written as text)."""


class OverLimitError(ArgsError):
    """The text is over one of the limits above (or holds a control character)."""


class MalformedError(ArgsError):
    """The text is not well-formed YAML: a flag's value may then be taken as plain text."""


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses nesting beyond :data:`MAX_DEPTH` while it composes, before
    Python's own recursion limit turns it into a RecursionError."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:  # pyright: ignore[reportIncompatibleMethodOverride]
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
                raise _RefusedError(f"nested deeper than {MAX_DEPTH} levels", mark.line + 1)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            return super().compose_node(parent, index)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType, reportUnknownArgumentType]
        finally:
            self.depth -= 1


class _RefusedError(Exception):
    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.line = problem, line


def read_text(path: Path, what: str) -> str:
    """The file's text, refused when it is too large, not UTF-8 or holds a NUL character."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise OverLimitError(
                f"{path}: {what} is {size} bytes, more than the {MAX_FILE_BYTES} allowed; "
                "an experiment file holds arguments, not data: pass a path to the data instead"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArgsError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as exc:
        raise ArgsError(
            f"{path}: {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ArgsError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    return text


def compose(text: str, source: str) -> tuple[yaml.SafeLoader, yaml.Node | None]:
    """The document's node graph and the loader that constructs values from it (dispose it).

    ``source`` names the text in errors (a file, or a flag). Refused: a NUL or other control
    character, nesting beyond :data:`MAX_DEPTH`, more than :data:`MAX_NODES` nodes once aliases
    are expanded, a recursive alias, and a string longer than :data:`MAX_VALUE_CHARS`.
    """
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # the reader's: a control character, with its position
        raise OverLimitError(f"{source}: not YAML text: {_one_line(str(exc))}") from None
    try:
        node = loader.get_single_node()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if node is not None:
            _check_size(node)  # pyright: ignore[reportUnknownArgumentType]
    except _RefusedError as exc:
        loader.dispose()
        line = f":{exc.line}" if exc.line else ""
        raise OverLimitError(f"{source}{line}: {exc.problem}; {_FIX}") from None
    except yaml.MarkedYAMLError as exc:
        loader.dispose()
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = _one_line(exc.problem or exc.context or "malformed YAML")
        raise MalformedError(f"{source}{line}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        loader.dispose()
        raise OverLimitError(f"{source}: not YAML text: {_one_line(str(exc))}") from None
    return loader, node  # pyright: ignore[reportUnknownVariableType]


def safe_load(text: str, source: str) -> object:
    """``yaml.safe_load`` within the limits of :func:`compose`."""
    loader, node = compose(text, source)
    try:
        return None if node is None else loader.construct_document(node)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    finally:
        loader.dispose()


_FIX = "write the values out plainly (no aliases of aliases, no deep nesting)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _check_size(root: yaml.Node) -> None:
    """Count the nodes of the graph as if every alias were a copy, without making the copies:
    each node's expanded size is computed once (memoized by identity)."""
    sizes: dict[int, int] = {}
    # Iterative post-order walk: the depth is bounded already, but aliases can make a wide
    # graph that a recursive walk would visit in Python frames.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if not children_done:
            if key in open_nodes:
                raise _RefusedError("an alias refers to a value that contains it", _line(node))
            open_nodes.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    raise _RefusedError("an alias refers to a value that contains it", _line(child))
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        open_nodes.discard(key)
        if isinstance(node, yaml.ScalarNode) and len(str(node.value)) > MAX_VALUE_CHARS:  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            raise _RefusedError(f"a value of more than {MAX_VALUE_CHARS} characters", _line(node))
        size = 1 + sum(sizes[id(child)] for child in children)
        if size > MAX_NODES:
            raise _RefusedError(
                f"more than {MAX_NODES} values once its aliases are expanded", _line(node)
            )
        sizes[key] = size


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        pairs: list[tuple[yaml.Node, yaml.Node]] = node.value  # pyright: ignore[reportUnknownMemberType, reportAssignmentType]
        return [part for pair in pairs for part in pair]
    if isinstance(node, yaml.SequenceNode):
        items: list[yaml.Node] = node.value  # pyright: ignore[reportUnknownMemberType, reportAssignmentType]
        return items
    return []


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
