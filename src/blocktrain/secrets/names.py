"""Secret names and values, and the shell lines that export them: pure functions."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from blocktrain.core import envvars
from blocktrain.secrets.errors import SecretsError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_name(name: str) -> str:
    """A name must be a shell variable name, other than the list of names itself."""
    if not _NAME.match(name):
        raise SecretsError(
            f"invalid secret name {name[:40]!r}: use letters, digits and underscores, "
            "not starting with a digit (e.g. S3_SECRET_KEY)"
        )
    if name == envvars.SECRET_NAMES.name:
        raise SecretsError(f"{name} is set by `blocktrain secrets env`; choose another name")
    return name


def value_from_input(text: str, name: str) -> str:
    """The value typed or piped for ``name``: one trailing newline dropped, never empty."""
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise SecretsError(
            f"empty value for {name}; type it at the prompt or pipe it on stdin "
            f"(`blocktrain secrets unset {name}` removes a secret)"
        )
    if "\0" in value:
        raise SecretsError(f"the value for {name} contains a NUL byte, which no variable can hold")
    return value


def export_lines(values: Mapping[str, str], listed: str = "") -> str:
    """``export NAME='value'`` for each secret, then the names added to ``listed``.

    ``listed`` is the current value of ``BLOCKTRAIN_SECRET_NAMES``: names it already holds stay
    masked too.
    """
    lines = [f"export {name}={shlex.quote(values[name])}" for name in sorted(values)]
    earlier = [n.strip() for n in listed.split(",") if n.strip()]
    names = sorted(set(earlier) | set(values))
    if names:
        lines.append(f"export {envvars.SECRET_NAMES.name}={shlex.quote(','.join(names))}")
    return "".join(line + "\n" for line in lines)
