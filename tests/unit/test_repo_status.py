"""The check behind the suite's clean-repository fixture, on a real throw-away git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import repo_status


def git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


def checkout(root: Path) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    (root / "kept.txt").write_text("one\n")
    (root / "gone.txt").write_text("two\n")
    (root / "edited.txt").write_text("three\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def test_new_modified_and_deleted_files_are_reported_ignored_ones_not(tmp_path: Path) -> None:
    root = checkout(tmp_path / "repo")
    (root / "edited.txt").write_text("before the run\n")  # already changed: not the tests' doing
    before = repo_status.status(root)
    assert before is not None
    assert before == {" M edited.txt"}
    (root / "slurm-7.out").write_text("")
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "predictions.csv").write_text("index\n")
    (root / "kept.txt").write_text("changed\n")
    (root / "gone.txt").unlink()
    (root / "edited.txt").write_text("during the run\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"")
    (root / ".pytest_cache").mkdir()
    after = repo_status.status(root)
    assert after is not None
    assert repo_status.left_behind(before, after) == [
        " D gone.txt",
        " M kept.txt",
        "?? deep/er/predictions.csv",
        "?? slurm-7.out",
    ]


def test_an_unchanged_checkout_leaves_nothing(tmp_path: Path) -> None:
    root = checkout(tmp_path / "repo")
    before = repo_status.status(root)
    assert before is not None
    assert not before
    assert repo_status.left_behind(before, repo_status.status(root) or frozenset()) == []


def test_a_folder_outside_git_has_no_status(tmp_path: Path) -> None:
    (tmp_path / "loose.txt").write_text("")
    assert repo_status.status(tmp_path) is None
