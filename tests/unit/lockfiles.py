"""Reading poetry.lock and the hashed requirements.lock exported from it, for the lock tests."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")

Pins = dict[tuple[str, str], set[str]]


def name(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def pins(path: Path) -> Pins:
    """(package, version) -> sha256 hashes, of a hashed requirements file."""
    found: Pins = {}
    current: tuple[str, str] | None = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = (name(match.group(1)), match.group(2))
            found[current] = set()
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            found[current].add(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return found


def locked(path: Path) -> Pins:
    """(package, version) -> sha256 hashes of its files, of a poetry.lock."""
    packages = tomllib.loads(path.read_text())["package"]
    return {
        (name(p["name"]), p["version"]): {f["hash"].removeprefix("sha256:") for f in p["files"]}
        for p in packages
    }


def template_lock_module() -> ModuleType:
    """hooks/template_lock.py, loaded from its file as the post-generation hook loads it."""
    spec = importlib.util.spec_from_file_location(
        "template_lock", REPO / "hooks" / "template_lock.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
