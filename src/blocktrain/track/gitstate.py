"""The code state of a run: commit, branch, and whether (and how) the tree is dirty."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_GIT_TIMEOUT_S = 20


@dataclass(frozen=True, kw_only=True, slots=True)
class GitState:
    commit: str
    branch: str | None
    dirty: bool
    diff: str


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(folder: Path) -> GitState | None:
    """The state of the repository holding ``folder``, or None outside a repository.

    The diff covers staged and unstaged changes to tracked files against HEAD; untracked files
    are listed by name only, since they may be large data.
    """
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return None
    branch = (_git(folder, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    diff = _git(folder, "diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    untracked = (_git(folder, "ls-files", "--others", "--exclude-standard") or "").split()
    if untracked:
        diff += "".join(f"# untracked: {name}\n" for name in untracked)
    return GitState(
        commit=commit.strip(),
        branch=branch if branch and branch != "HEAD" else None,
        dirty=bool(diff),
        diff=diff,
    )


def git_tags(state: GitState | None) -> dict[str, str]:
    """MLflow tags describing the code state (MLflow's own names where it has them)."""
    if state is None:
        return {"blocktrain.git": "none"}
    tags = {
        "mlflow.source.git.commit": state.commit,
        "blocktrain.git.dirty": str(state.dirty).lower(),
    }
    if state.branch:
        tags["mlflow.source.git.branch"] = state.branch
    return tags
