"""Where a baked project installs blocktrain from when the `blocktrain` variable is left empty.

The answer is the source the template was baked from: a local template folder is installed
from that folder (editable), a git template from the same repository and checkout. The
decision is the pure function `blocktrain_source`; `TemplateSource` is the Jinja extension
that cookiecutter loads (`_extensions` in cookiecutter.json) so that the template's files and
hooks can use it as filters. Nothing here writes files or runs commands.

cookiecutter imports this module from the template's folder, which it puts on sys.path: the
folder this file sits in is therefore the local template, absolute. cookiecutter's own
`_repo_dir` is the path as typed (`.` or `../blocktrain`) and cannot be resolved later, since
cookiecutter renders files and hooks from other working directories.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from jinja2 import Environment
from jinja2.ext import Extension

# The folder holding cookiecutter.json and hooks/.
TEMPLATE_FOLDER = Path(__file__).resolve().parent.parent
# What cookiecutter clones rather than reads as a folder (cookiecutter.repository.REPO_REGEX).
REPOSITORY = re.compile(r"(((git|hg)\+)?(git|ssh|file|https?):(//)?)|(\w+@[\w.]+)")
# cookiecutter's built-in abbreviations (cookiecutter.config.BUILTIN_ABBREVIATIONS).
ABBREVIATIONS = {
    "gh": "https://github.com/{0}.git",
    "gl": "https://gitlab.com/{0}.git",
    "bb": "https://bitbucket.org/{0}",
}
# git@host:org/repo.git, the scp-like form git accepts and pip does not.
SCP_LIKE = re.compile(r"(?P<user>[\w.-]+)@(?P<host>[\w.-]+):(?P<path>(?!//).+)")
FIX = "pass blocktrain=/path/to/blocktrain, blocktrain=git+https://... or blocktrain=0.1.0"


class SourceError(ValueError):
    """The template's source cannot be installed with pip; the message names the fix."""


def blocktrain_source(given: str, template: str, checkout: str | None, folder: Path) -> str:
    """The blocktrain a project baked from `template` installs.

    Args:
        given: the `blocktrain` variable; when not empty, it is the answer.
        template: the template as given to cookiecutter (its `_template`).
        checkout: the branch, tag or commit given with --checkout (`_checkout`), or None.
        folder: the local template's folder, absolute.

    Raises:
        SourceError: the template is a zip or a Mercurial repository.
    """
    if given:
        return given
    if template.lower().endswith(".zip"):
        raise SourceError(f"blocktrain cannot be installed from the zip {template}; {FIX}")
    url = expanded(template)
    if not REPOSITORY.match(url):
        return str(folder)
    if url.startswith("hg+"):
        raise SourceError(f"blocktrain is installed from git, not Mercurial ({template}); {FIX}")
    scp = SCP_LIKE.fullmatch(url)
    if scp:
        url = f"ssh://{scp['user']}@{scp['host']}/{scp['path']}"
    url = url if url.startswith("git+") else f"git+{url}"
    return f"{url}@{checkout}" if checkout else url


def expanded(template: str) -> str:
    """The template with a built-in abbreviation (gh:org/repo) written out."""
    prefix, sep, rest = template.partition(":")
    if sep and prefix in ABBREVIATIONS:
        return ABBREVIATIONS[prefix].format(rest)
    return template


def choice_of(values: Mapping[str, object]) -> dict[str, str]:
    """The `blocktrain_choice` filter: {"source": ..., "problem": ...}, one of them empty."""
    try:
        return {"source": source_from(values), "problem": ""}
    except SourceError as exc:
        return {"source": "", "problem": str(exc)}


def source_of(values: Mapping[str, object]) -> str:
    """The `blocktrain_source` filter: the source, or "" when the user must give one."""
    return choice_of(values)["source"]


def source_from(values: Mapping[str, object]) -> str:
    """`blocktrain_source` over the cookiecutter variables."""
    checkout = values.get("_checkout")
    return blocktrain_source(
        str(values["blocktrain"]),
        str(values.get("_template", "")),
        str(checkout) if checkout else None,
        TEMPLATE_FOLDER,
    )


class TemplateSource(Extension):
    """Adds the filters `blocktrain_source` (for the files), `blocktrain_choice` and
    `template_folder` (hooks: the folder holding hooks/, absolute, whatever it is applied to)."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["blocktrain_source"] = source_of
        environment.filters["blocktrain_choice"] = choice_of
        environment.filters["template_folder"] = lambda _: str(TEMPLATE_FOLDER)
