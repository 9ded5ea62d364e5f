"""``blocktrain GROUP ...``: the toolkit's own commands, one module per group.

Each group lives in ``blocktrain.cli.<module>`` with a ``main(argv) -> int``; it is imported
only when named, so ``blocktrain --help`` stays fast and never loads torch, boto3 or mlflow.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

GROUPS: dict[str, tuple[str, str]] = {
    "secrets": (
        "blocktrain.cli.secrets",
        "encrypted credentials: init, set, get, list, env, rotate",
    ),
    "cache": ("blocktrain.cli.cache", "the dataset cache: size of each entry, clean, fetch now"),
}

USAGE = "usage: blocktrain {" + ",".join(GROUPS) + "} ...\n"


def _help() -> str:
    width = max(map(len, GROUPS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in GROUPS.items()]
    return (
        USAGE
        + "\nblocktrain's own commands:\n\n"
        + "\n".join(lines)
        + (
            "\n\nRun `blocktrain GROUP --help` for a group's commands. Jobs are handled by\n"
            "slurm-launch, slurm-status, slurm-log, slurm-stop and slurm-cancel.\n"
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        sys.stdout.write(_help())
        return 0 if args else 2
    group = GROUPS.get(args[0])
    if group is None:
        sys.stderr.write(
            f"{USAGE}blocktrain: error: unknown command {args[0]!r}; "
            f"choose one of {', '.join(GROUPS)}\n"
        )
        return 2
    module = importlib.import_module(group[0])
    run = cast("Callable[[Sequence[str]], int]", module.main)
    return run(args[1:])


if __name__ == "__main__":
    sys.exit(main())
