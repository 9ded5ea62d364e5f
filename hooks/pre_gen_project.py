"""Check the template variables before anything is written (cookiecutter renders this file).

A bad value stops the generation with one line naming the variable and the fix; cookiecutter
then removes the half-made folder. The blocktrain source checked is the one the project will
use: the variable, or when it is empty the template's own source (hooks/template_source.py).
"""

import json
import keyword
import re
import sys
import tomllib
from pathlib import Path

# The variables, and the blocktrain source chosen from them, as JSON objects: from its opening
# brace to its closing one, such text cannot hold three quotes in a row.
VALUES: dict[str, str] = json.loads(r"""{{ cookiecutter | tojson }}""")
CHOICE: dict[str, str] = json.loads(r"""{{ cookiecutter | blocktrain_choice | tojson }}""")
SLUG = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
VERSION = re.compile(r"(==|>=|~=)?\d+(\.\d+)*")


def problem(values: dict[str, str]) -> str | None:
    """What is wrong with the values (the blocktrain source aside), as the message, or None."""
    for name in ("project_name", "author"):
        if not values[name].strip() or any(c in values[name] for c in '"\\\n'):
            return f"{name} must be one line without quotes or backslashes; pass e.g. {name}=Ada"
    slug, package = values["project_slug"], values["package_name"]
    if not SLUG.fullmatch(slug):
        return (
            f"project_slug {slug!r} must be lower-case letters, digits, '-', '_' or '.'; "
            "pass e.g. project_slug=drone-targets"
        )
    if not package.isidentifier() or keyword.iskeyword(package) or package != package.lower():
        return (
            f"package_name {package!r} is not a lower-case Python identifier; "
            "pass e.g. package_name=drone_targets"
        )
    bucket = values["s3_bucket"]
    if bucket and not BUCKET.fullmatch(bucket):
        return f"s3_bucket {bucket!r} is not an S3 bucket name; pass a valid one or leave it empty"
    return None


def source_problem(source: str) -> str | None:
    """A blocktrain source is a toolkit folder, a git+ URL or a version."""
    if source.startswith("git+") or VERSION.fullmatch(source):
        return None
    if any(c.isspace() or c in "\"'\\" for c in source):
        return f"blocktrain folder {source!r} has spaces or quotes; a file:// URL cannot hold them"
    folder = Path(source)
    if not folder.is_absolute():
        return f"blocktrain folder {source!r} must be an absolute path; pass blocktrain=$PWD/..."
    try:
        name = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        name = None
    if name != "blocktrain":
        return f"{source} is not the blocktrain toolkit (no pyproject.toml naming it); fix the path"
    return None


if __name__ == "__main__":
    message = problem(VALUES) or CHOICE["problem"] or source_problem(CHOICE["source"])
    if message is not None:
        sys.stderr.write(f"make project: error: {message}\n")
        sys.exit(2)
