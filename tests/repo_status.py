"""What ``git status`` shows in a checkout, so that the suite can prove it leaves the repository
as it found it (the session fixture in tests/conftest.py).

It only reads: ``--no-optional-locks`` keeps ``git status`` from refreshing the index.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def status(root: Path) -> frozenset[str] | None:
    """The lines of ``git status --porcelain`` for the checkout at ``root``, each untracked file
    on its own line and ignored files left out; None when ``root`` is not a git checkout."""
    if not (root / ".git").exists():  # a folder, or a file in a linked worktree
        return None
    done = subprocess.run(
        ["git", "--no-optional-locks", "status", "--porcelain=v1", "--untracked-files=all"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return frozenset(line for line in done.stdout.splitlines() if line)


def left_behind(before: frozenset[str], after: frozenset[str]) -> list[str]:
    """The status lines that appeared between ``before`` and ``after``: new untracked files,
    and tracked files newly modified or deleted."""
    return sorted(after - before)
