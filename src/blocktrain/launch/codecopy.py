"""A frozen copy of the project's code, so that every attempt of a run executes the same code.

The copy holds what git would commit (tracked files and untracked files that are not ignored,
with their uncommitted changes); outside a git repository, ``src/`` and the top-level files.
Never the project's own state: ``.blocktrain/``, the embedded MLflow store (``mlflow.db`` and
its journal, which other launches write to meanwhile) and its ``mlartifacts/``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from blocktrain.core.paths import STATE_DIR, import_paths
from blocktrain.errors import BlocktrainError
from blocktrain.track.backend import EMBEDDED_ARTIFACTS, EMBEDDED_DB

_SKIP_PARTS = frozenset(
    {".git", STATE_DIR, ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", EMBEDDED_ARTIFACTS}
)


def project_files(root: Path) -> list[Path]:
    """Relative paths of the files that make up the project's code."""
    command = ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others"]
    try:
        done = subprocess.run(
            [*command, "--exclude-standard"], capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is not None and done.returncode == 0:
        names = [Path(n) for n in done.stdout.decode().split("\0") if n]
    else:
        names = [p.relative_to(root) for p in _walk(root)]
    return [n for n in names if _is_code(n) and (root / n).is_file()]


def _is_code(name: Path) -> bool:
    if _SKIP_PARTS.intersection(name.parts):
        return False
    # mlflow.db, mlflow.db-journal, -wal, -shm, .lock: SQLite's files beside the store.
    return not (len(name.parts) == 1 and name.name.startswith(EMBEDDED_DB))


def _walk(root: Path) -> Iterable[Path]:
    yield from (p for p in root.iterdir() if p.is_file())
    source = root / "src"
    if source.is_dir():
        yield from (p for p in source.rglob("*") if p.is_file())


def freeze_code(root: Path, destination: Path) -> int:
    """Copy the project's code into a new folder ``destination``; returns the file count."""
    if destination.exists():
        raise BlocktrainError(f"{destination} already exists; refusing to overwrite a code copy")
    files = project_files(root)
    temporary = destination.with_name(destination.name + ".partial")
    shutil.rmtree(temporary, ignore_errors=True)
    copied = 0
    for name in files:
        target = temporary / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(root / name, target)
        except FileNotFoundError:
            continue  # an untracked file that went away since it was listed: not code
        copied += 1
    temporary.mkdir(parents=True, exist_ok=True)
    temporary.rename(destination)
    return copied


def planned_import_paths(root: Path, code_dir: Path) -> list[str]:
    """:func:`import_paths` of a copy of ``root`` in ``code_dir`` not made yet (a dry run)."""
    return [str(code_dir / Path(p).relative_to(root)) for p in import_paths(root)]
