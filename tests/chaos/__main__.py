"""``python -m chaos`` (with ``tests/`` on ``PYTHONPATH``): run a chaos campaign, print its table.

    PYTHONPATH=tests .venv/bin/python -m chaos --episodes 20 --seed 7 [--executor slurm]
        [--nodes 2] [--only 3] [--workdir DIR] [--keep-all]

Exit status 0 when no invariant was violated and every episode ran to its end, 1 otherwise,
2 for a usage error. The folders of the episodes that found something are kept (the report
names them); the others are removed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from chaos.driver import remove_clean_episodes, run_campaign, workdir_for
from chaos.plan import Config, Kind


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--episodes", type=int, default=4, help="how many (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="the campaign's seed (default 0)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1, help="Slurm nodes")
    parser.add_argument("--only", type=int, action="append", metavar="N",
                        help="run episode N of the seed alone (repeatable)")  # fmt: skip
    parser.add_argument("--kinds", help="only these fault kinds, comma-separated (e.g. "
                        "sigkill-rank,slurm-stop)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="default: a new folder under /tmp")
    parser.add_argument("--keep-all", action="store_true", help="keep every episode's folder")
    options = parser.parse_args(argv)
    try:
        config = Config(executor=options.executor, nodes=options.nodes)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        kinds = [Kind(k.strip()) for k in options.kinds.split(",")] if options.kinds else None
    except ValueError as exc:
        parser.error(f"{exc}; the kinds: {', '.join(k.value for k in Kind)}")
    episodes = options.only or list(range(options.episodes))
    with workdir_for(options.workdir) as workdir:
        print(f"chaos: {len(episodes)} episode(s), seed {options.seed}, {config.label}, in {workdir}",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            results, table = run_campaign(
                config,
                options.seed,
                episodes,
                workdir,
                progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
                keep_all=options.keep_all,
                kinds=kinds,
            )
        except RuntimeError as exc:  # the services did not start
            print(f"chaos: {exc}", file=sys.stderr)
            return 2
        if not options.keep_all:
            remove_clean_episodes(results, workdir)
    print(table, end="")
    return 1 if any(r.violations or r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
