"""The layout stays true: packages import only downwards, and the light ones stay light.

docs/architecture.md draws the same graph; a change to ``ALLOWED`` is a change to the
architecture and belongs in that page too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "blocktrain"

# Each unit (a package, or a top-level module) and the units it may import, at any depth of
# the module (function-level imports count: they run too). The order is the layering.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "entry": {"core", "errors"},
    "secrets": {"core", "errors"},
    "distributed": {"core"},
    "restart": {"core", "errors", "entry", "distributed"},
    "track": {"core", "errors", "restart"},
    "notify": {"core", "errors", "track"},
    "data": {"core", "errors", "track"},
    "annotate": {"notify", "track"},
    "train": {"core", "errors", "entry", "distributed", "restart", "track", "data"},
    "launch": {"core", "errors", "entry", "distributed", "restart", "track", "notify"},
    # The optional Lightning integration: user code imports it, nothing of blocktrain does.
    "lightning": {"core", "errors", "distributed", "restart", "track", "train"},
    "cli": {"core", "errors", "entry", "secrets", "track", "data", "launch"},
    "__init__": {"annotate", "errors", "track"},
}

# The rooms of ``launch`` and what each may import of the others, in the same way: a room is a
# sub-package or a module of ``launch``; the modules of the flow (launcher, relaunch, ...) sit
# on top and may import every room.
LAUNCH_ROOMS: dict[str, set[str]] = {
    "containers": set(),
    "profile": {"containers"},
    "records": set(),
    "sweeps": {"records"},
    "slurm": {"containers", "profile", "records", "sweeps"},
    "local": {"profile", "slurm"},
}
LAUNCH_FLOW = {
    "codecopy", "entryname", "executors", "launcher", "relaunch", "request", "runjobs",
    "statusview",
}  # fmt: skip

# Packages that the job commands and entry-point resolution load: torch, mlflow, submitit
# and boto3 are imported inside the functions that need them, never with the module.
LIGHT = {
    "errors", "core", "entry", "secrets", "distributed", "restart", "track", "notify",
    "annotate", "launch", "cli", "__init__",
}  # fmt: skip
HEAVY = (
    "torch", "mlflow", "submitit", "boto3", "botocore", "torchvision", "numpy", "lightning",
    "optuna",
)  # fmt: skip


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        yield name, ast.parse(path.read_text(), str(path))


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "blocktrain":
            return [f"blocktrain.{alias.name}" for alias in node.names]
        return [node.module]
    return []


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> Iterator[str]:
    """Imports that run when the module is imported: outside functions and TYPE_CHECKING."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        yield from _imported(node)
        pending.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))


def test_every_unit_is_placed() -> None:
    units = {_unit(name) for name, _ in _modules() if name != "blocktrain"} | {"__init__"}
    assert units <= set(ALLOWED), f"place {sorted(units - set(ALLOWED))} in ALLOWED"


def test_packages_import_only_what_the_layering_allows() -> None:
    wrong: list[str] = []
    for name, tree in _modules():
        unit = "__init__" if name == "blocktrain" else _unit(name)
        for node in ast.walk(tree):
            for target in _imported(node):
                if not target.startswith("blocktrain."):
                    continue
                used = _unit(target)
                if used != unit and used not in ALLOWED[unit]:
                    wrong.append(f"{name} imports {target} ({unit} -> {used})")
    assert not wrong, "\n".join(wrong)


def test_the_layering_has_no_cycle() -> None:
    done: set[str] = set()

    def visit(unit: str, path: tuple[str, ...]) -> None:
        assert unit not in path, f"cycle: {' -> '.join((*path, unit))}"
        if unit in done:
            return
        for used in ALLOWED[unit]:
            visit(used, (*path, unit))
        done.add(unit)

    for unit in ALLOWED:
        visit(unit, ())


def test_light_packages_import_no_heavy_library_at_module_level() -> None:
    wrong: list[str] = []
    for name, tree in _modules():
        unit = "__init__" if name == "blocktrain" else _unit(name)
        if unit not in LIGHT:
            continue
        wrong.extend(
            f"{name} imports {target} when imported"
            for target in _module_level_imports(tree)
            if target.split(".")[0] in HEAVY
        )
    assert not wrong, "\n".join(wrong)


PROBE = """
import importlib, pkgutil, sys
import blocktrain
light = {light}
# Walked unit by unit: walk_packages imports every package it passes, the heavy ones too.
for unit in light:
    module = importlib.import_module("blocktrain." + unit)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), module.__name__ + "."):
        if not info.name.split(".")[-1].startswith("__main__"):
            importlib.import_module(info.name)
print(sorted(m for m in sys.modules if m.split(".")[0] in {heavy}))
"""


def test_importing_every_light_module_loads_no_heavy_library() -> None:
    """The static check above, confirmed by a fresh interpreter that imports them all."""
    light = LIGHT - {"__init__"}
    code = PROBE.format(light=sorted(light), heavy=set(HEAVY))
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "launch" else None


def test_every_launch_room_is_placed() -> None:
    rooms = {room for name, _ in _modules() if (room := _room(name))} - {"__init__"}
    unplaced = sorted(str(r) for r in rooms - set(LAUNCH_ROOMS) - LAUNCH_FLOW)
    assert not unplaced, f"place {unplaced} in LAUNCH_ROOMS or LAUNCH_FLOW"


def test_launch_rooms_import_only_what_their_order_allows() -> None:
    wrong: list[str] = []
    for name, tree in _modules():
        room = _room(name)
        if room not in LAUNCH_ROOMS:
            continue
        for node in ast.walk(tree):
            for target in _imported(node):
                used = _room(target) if target.startswith("blocktrain.launch.") else None
                if used is not None and used != room and used not in LAUNCH_ROOMS[room]:
                    wrong.append(f"{name} imports {target} (launch.{room} -> launch.{used})")
    assert not wrong, "\n".join(wrong)


def test_the_launch_rooms_have_no_cycle() -> None:
    done: set[str] = set()

    def visit(room: str, path: tuple[str, ...]) -> None:
        assert room not in path, f"cycle: {' -> '.join((*path, room))}"
        if room not in done:
            for used in LAUNCH_ROOMS[room]:
                visit(used, (*path, room))
            done.add(room)

    for room in LAUNCH_ROOMS:
        visit(room, ())


@pytest.mark.parametrize(
    "unit",
    sorted(u for u in ALLOWED if u not in {"errors", "__init__"})
    + [f"launch/{room}" for room in sorted(LAUNCH_ROOMS) if (SRC / "launch" / room).is_dir()],
)
def test_each_unit_says_what_it_owns(unit: str) -> None:
    path = SRC / unit / "__init__.py" if (SRC / unit).is_dir() else SRC / f"{unit}.py"
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring, f"{path} needs a docstring saying what it owns"
