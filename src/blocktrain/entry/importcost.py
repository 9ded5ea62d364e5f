"""What importing an entry module cost a launch, in one line (pure).

The launcher imports the user's entry module to read its functions' signatures. A module that
imports torch, Lightning or pandas at its top makes every launch, and every refused typo, wait
seconds for them; the line names them and the fix.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

SLOW_IMPORT_S = 0.5
"""An entry module's import that takes longer than this is named, with what it imported."""
SHOWN = 3


def heavy_packages(
    new_modules: Iterable[str], files: Mapping[str, str | None], project_root: Path
) -> list[str]:
    """The top-level third-party packages among ``new_modules``, most modules first.

    ``files`` maps module names to their ``__file__``: the project's own modules, the standard
    library and blocktrain are not what the user can move.
    """
    counts: Counter[str] = Counter()
    root = str(project_root.resolve())
    for name in new_modules:
        top = name.partition(".")[0]
        if top.startswith("_") or top in sys.stdlib_module_names or top == "blocktrain":
            continue
        path = files.get(name)
        if path and str(Path(path).resolve()).startswith(root + "/"):
            continue
        counts[top] += 1
    return [name for name, _ in counts.most_common()]


def slow_import_line(module: str, seconds: float, packages: list[str]) -> str | None:
    """The one line for an import of ``seconds``; None when it was quick."""
    if seconds < SLOW_IMPORT_S:
        return None
    named = ", ".join(packages[:SHOWN]) + (", ..." if len(packages) > SHOWN else "")
    what = f" ({named} at its top)" if named else ""
    return (
        f"importing the entry module {module} took {seconds:.1f} s{what}, and every launch "
        "waits for it: import them inside the entry functions (docs/entry.md)"
    )
