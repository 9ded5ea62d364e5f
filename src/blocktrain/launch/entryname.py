"""Which function an ENTRY argument names: ``module:function``, or a function of the project's
entry module (``--module``, else ``entry-module`` under ``[tool.blocktrain]`` in pyproject.toml).

Must not import the module: the launcher does that once the name is known.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from blocktrain.errors import BlocktrainError


def entry_spec(name: str, module: str | None, root: Path) -> str:
    """``module:function`` for the ENTRY argument; ``evaluate-all`` names ``evaluate_all``."""
    if ":" in name:
        return name
    module = module or configured_module(root)
    if not module:
        raise BlocktrainError(
            "no entry module: pass --module package.entry, or set entry-module under "
            f"[tool.blocktrain] in {root / 'pyproject.toml'}"
        )
    return f"{module}:{name.replace('-', '_')}"


def configured_module(root: Path) -> str | None:
    """``entry-module`` of ``[tool.blocktrain]`` in the project's pyproject.toml, if set."""
    try:
        config = tomllib.loads((root / "pyproject.toml").read_text())
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return None
    value = config.get("tool", {}).get("blocktrain", {}).get("entry-module")
    return value if isinstance(value, str) else None
