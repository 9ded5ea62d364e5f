"""``blocktrain cache``: the dataset cache's entries, their size, and cleaning them.

The levels come from the environment as for ``blocktrain.data.cache.localize``: ``DATA_PATH``
(persistent) and ``DATA_EPHEMERAL_PATH`` (node-local). Nothing here imports boto3 or torch
unless ``fetch`` is given an S3 source.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from blocktrain.errors import BlocktrainError

if TYPE_CHECKING:
    from blocktrain.data.cache import CacheConfig, EntryReport, LevelName

PROG = "blocktrain cache"

DESCRIPTION = """\
The dataset cache: persistent entries in $DATA_PATH, node-local ones in $DATA_EPHEMERAL_PATH.

  blocktrain cache size                    # every entry of both levels, and the totals
  blocktrain cache clean 'mnist*'          # persistent entries whose name or source matches
  blocktrain cache clean --all             # every entry of both levels
  blocktrain cache fetch s3://bucket/ds    # localize a dataset now; print its local path

An entry that another process is filling is left alone by `clean` (exit status 1).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "size", help="size of each entry and the totals", description="Size of each entry."
    )
    clean = commands.add_parser(
        "clean", help="remove entries", description="Remove cache entries (persistent level)."
    )
    clean.add_argument(
        "pattern",
        nargs="?",
        metavar="PATTERN",
        help="glob on the entry name, its source, or the source's last part (default: all)",
    )
    levels = clean.add_mutually_exclusive_group()
    levels.add_argument(
        "--ephemeral", action="store_true", help="clean the node-local level instead"
    )
    levels.add_argument("--all", action="store_true", help="clean both levels")
    fetch = commands.add_parser(
        "fetch",
        help="localize a dataset and print its local path",
        description="Localize a dataset through the cache and print its local path.",
    )
    fetch.add_argument("source", metavar="SOURCE", help="s3://bucket/key, or a local path")
    fetch.add_argument("--dev", action="store_true", help="prefer the -tiny variant")
    fetch.add_argument(
        "--verify", choices=("stat", "full"), default=None, help="how to check a complete entry"
    )
    fetch.add_argument("--refresh", action="store_true", help="list the source again")
    return parser


def main(argv: Sequence[str]) -> int:
    options = build_parser().parse_args(argv)
    try:
        from blocktrain.data.cache import CacheConfig

        config = CacheConfig.from_environ(os.environ)
        if options.command == "size":
            sys.stdout.write(size_text(config))
            return 0
        if options.command == "fetch":
            return _fetch(config, options)
        return _clean(config, options)
    except BlocktrainError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


def size_text(config: CacheConfig) -> str:
    """The size report: per level, each entry and the level's total; then both levels."""
    from blocktrain.data.cache import report
    from blocktrain.data.memory import format_size

    entries = report(config)
    lines: list[str] = []
    paths = {"persistent": config.persistent, "ephemeral": config.ephemeral}
    for level in ("persistent", "ephemeral"):
        path = paths[level]
        if path is None:
            lines.append(f"{level}: DATA_EPHEMERAL_PATH is not set\n")
            continue
        mine = [entry for entry in entries if entry.level == level]
        lines.append(f"{level}: {path}\n")
        width = max([len(entry.name) for entry in mine] + [5])
        for entry in mine:
            state = "complete" if entry.complete else "partial"
            lines.append(
                f"  {entry.name:<{width}} {entry.files:>8} files {format_size(entry.bytes):>10}"
                f"  {state:<8}  {entry.origin or '?'}\n"
            )
        files, size = sum(e.files for e in mine), sum(e.bytes for e in mine)
        lines.append(f"  {'total':<{width}} {files:>8} files {format_size(size):>10}\n")
    total = sum(entry.bytes for entry in entries)
    noun = "entry" if len(entries) == 1 else "entries"
    lines.append(f"both levels: {len(entries)} {noun}, {format_size(total)}\n")
    return "".join(lines)


def _levels(config: CacheConfig, options: argparse.Namespace) -> list[LevelName]:
    if options.all:
        return ["persistent", "ephemeral"] if config.ephemeral is not None else ["persistent"]
    if options.ephemeral:
        if config.ephemeral is None:
            raise BlocktrainError(
                "DATA_EPHEMERAL_PATH is not set, so there is no node-local level to clean; "
                "set it (e.g. to $SLURM_TMPDIR) or drop --ephemeral"
            )
        return ["ephemeral"]
    return ["persistent"]


def _clean(config: CacheConfig, options: argparse.Namespace) -> int:
    from blocktrain.data.cache import clean

    removed, busy = clean(config, options.pattern, _levels(config, options))
    for entry in removed:
        sys.stdout.write(f"removed {_describe(entry)}\n")
    for entry in busy:
        sys.stdout.write(f"in use, left alone: {_describe(entry)}\n")
    if not removed and not busy:
        what = f"matches {options.pattern!r}" if options.pattern else "exists"
        sys.stdout.write(f"no cache entry {what} in {', '.join(_levels(config, options))}\n")
    return 1 if busy else 0


def _describe(entry: EntryReport) -> str:
    from blocktrain.data.memory import format_size

    return f"{entry.level} {entry.name} ({format_size(entry.bytes)}, {entry.origin or '?'})"


def _fetch(config: CacheConfig, options: argparse.Namespace) -> int:
    import logging

    from blocktrain.data.cache import localize

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    path = localize(
        options.source,
        config=config,
        verify=options.verify,
        dev=True if options.dev else None,
        refresh=options.refresh,
    )
    sys.stdout.write(f"{path}\n")
    return 0
