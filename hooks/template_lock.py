"""The baked project's poetry.lock: the template's lock, with blocktrain from this bake's source.

The template ships one poetry.lock for every project: the same third-party packages, made from
the toolkit's own lock (docs/template.md). Two things in it depend on the bake: where blocktrain
comes from (a folder, a git repository or a package index: `blocktrain_source` in
template_source.py) and Poetry's content-hash of pyproject.toml, whose dependencies name that
source. The post-generation hook rewrites both (`baked_lock`), so that a new project passes
`poetry check --lock` and `poetry install` takes blocktrain from its source, with no resolution
at bake time. Nothing else in the lock changes; `make lock` in the project re-locks for real.

Plain text in, plain text out: the hook runs in cookiecutter's environment, which has no TOML
writer.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path
from typing import Any

# What Poetry 2's Locker._get_content_hash reads of pyproject.toml: `poetry check --lock` and
# `poetry install` compare its hash with the lock's. tests/unit/test_lock.py checks this copy
# against the toolkit's own poetry.lock, which Poetry wrote.
PROJECT_KEYS = ("requires-python", "dependencies", "optional-dependencies")
POETRY_LEGACY_KEYS = ("dependencies", "source", "extras", "dev-dependencies")
POETRY_KEYS = (*POETRY_LEGACY_KEYS, "group")
# One [[package]] of a poetry.lock, up to the next one or the [metadata] table.
PACKAGE = re.compile(
    r"^\[\[package\]\]\n(?:(?!\[\[package\]\]\n|\[metadata\]\n).*\n)*", re.MULTILINE
)
SOURCE_TABLE = re.compile(r"^\[package\.source\]\n(?:(?!\[).*\S.*\n)*", re.MULTILINE)
CONTENT_HASH = re.compile(r'^content-hash = "[0-9a-f]*"$', re.MULTILINE)
# Where a git URL's revision starts: "@" after the host's path (user@ before it is the login).
GIT_REVISION = re.compile(r"^(?P<url>[a-z+]+://[^/]*/[^@#]+)(?:@(?P<revision>[^#]+))?$")
INDEX_PIN = re.compile(r"^(==)?(?P<version>\d+(\.\d+)*)$")


def content_hash(pyproject: Mapping[str, Any]) -> str:
    """Poetry's content-hash of a parsed pyproject.toml (Poetry 2.x)."""
    project = pyproject.get("project", {})
    groups = pyproject.get("dependency-groups", {})
    poetry = pyproject.get("tool", {}).get("poetry", {})
    relevant_project = {key: project[key] for key in PROJECT_KEYS if project.get(key) is not None}
    relevant_poetry = {
        key: poetry.get(key)
        for key in POETRY_KEYS
        if poetry.get(key) is not None
        or (key in POETRY_LEGACY_KEYS and not relevant_project and not groups)
    }
    relevant: dict[str, Any] = {}
    if relevant_project:
        relevant["project"] = relevant_project
    if groups:
        relevant["dependency-groups"] = groups
    if relevant:
        relevant["tool"] = {"poetry": relevant_poetry}
    else:
        relevant = relevant_poetry
    return sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def source_lines(source: str, project: Path) -> tuple[str, str | None]:
    """blocktrain's [package.source] table for `source` ("" for the default package index),
    and the version an index pin asks for (None when it asks for none)."""
    if source.startswith("/"):
        url = Path(os.path.relpath(source, project.resolve())).as_posix()
        return f'[package.source]\ntype = "directory"\nurl = "{url}"\n', None
    if source.startswith("git+"):
        match = GIT_REVISION.match(source.removeprefix("git+"))
        if match is None:
            raise ValueError(f"blocktrain from {source!r}: not a git URL Poetry reads")
        # No resolved_reference: Poetry installs the revision as it is now; `make lock` pins it.
        revision = match["revision"] or "HEAD"
        return (
            f'[package.source]\ntype = "git"\nurl = "{match["url"]}"\nreference = "{revision}"\n',
            None,
        )
    pin = INDEX_PIN.match(source)
    return "", pin["version"] if pin else None


def baked_lock(lock: str, pyproject: str, source: str, project: Path) -> str:
    """The template's poetry.lock text, made the lock of the baked project in `project`.

    Args:
        lock: the template's poetry.lock.
        pyproject: the baked project's pyproject.toml.
        source: where the project takes blocktrain from (`blocktrain_source`).
        project: the baked project's folder.
    """
    table, version = source_lines(source, project)
    blocktrain = next(
        (
            m
            for m in PACKAGE.finditer(lock)
            if m.group().startswith('[[package]]\nname = "blocktrain"\n')
        ),
        None,
    )
    if blocktrain is None:
        raise ValueError("the template's poetry.lock has no blocktrain package")
    entry = SOURCE_TABLE.sub("", blocktrain.group()).rstrip("\n") + "\n"
    if not table:
        entry = re.sub(r"^develop = .*\n", "", entry, flags=re.MULTILINE)
    if version:
        entry = re.sub(
            r'^version = ".*"$', f'version = "{version}"', entry, count=1, flags=re.MULTILINE
        )
    entry += f"\n{table}\n" if table else "\n"
    baked = lock[: blocktrain.start()] + entry + lock[blocktrain.end() :]
    digest = content_hash(tomllib.loads(pyproject))
    return CONTENT_HASH.sub(f'content-hash = "{digest}"', baked, count=1)
