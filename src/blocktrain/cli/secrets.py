"""``blocktrain secrets``: the project's encrypted credentials.

The file (``secrets.enc`` in the project root) is safe to commit; its key stays in the OS
keychain or in a key file outside the project. ``.envrc`` loads the values into the shell with
``eval "$(blocktrain secrets env)"``, and jobs inherit them from ``slurm-launch``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from blocktrain.errors import BlocktrainError

PROG = "blocktrain secrets"

DESCRIPTION = """\
Encrypted credentials of this project, exported as environment variables.

  blocktrain secrets init                  # a new secrets.enc and its key
  blocktrain secrets set S3_SECRET_KEY     # prompts for the value (or reads it from stdin)
  blocktrain secrets list                  # names only
  eval "$(blocktrain secrets env)"         # what .envrc does

The file is encrypted (Fernet) and safe to commit. Its key lives in the OS keychain, or where
there is none in $XDG_CONFIG_HOME/blocktrain/keys/KEY_ID.key (mode 600), outside the project.
"""


def build_parser() -> argparse.ArgumentParser:
    file_option = argparse.ArgumentParser(add_help=False)
    file_option.add_argument(
        "--file",
        type=Path,
        default=argparse.SUPPRESS,
        help="the secrets file (default: secrets.enc in the project root)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[file_option],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, about: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=about, description=about, parents=[file_option])

    init = command("init", "create the secrets file and a new key")
    init.add_argument(
        "--key-store",
        choices=("auto", "keychain", "file"),
        default="auto",
        help="where the key goes: the OS keychain, a key file, or auto (keychain if any)",
    )
    setter = command("set", "add or replace a secret; the value comes from a prompt or stdin")
    setter.add_argument("name", metavar="KEY")
    # Caught to explain why, instead of argparse's "unrecognized arguments".
    setter.add_argument("value_in_argv", nargs="*", help=argparse.SUPPRESS)
    command("unset", "remove a secret").add_argument("name", metavar="KEY")
    command("list", "the names of the secrets (never their values)")
    command("get", "print one value").add_argument("name", metavar="KEY")
    command("env", "print `export KEY='value'` lines for eval in a shell")
    command("rotate", "re-encrypt with a new key and forget the old one")
    return parser


def main(argv: Sequence[str]) -> int:
    options = build_parser().parse_args(argv)
    try:
        sys.stdout.write(run(options, sys.stdin))
    except BlocktrainError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def run(options: argparse.Namespace, stdin: TextIO) -> str:
    """Carry out one command; returns what it prints."""
    from blocktrain.core.paths import project_root
    from blocktrain.secrets.keys import KeyStores
    from blocktrain.secrets.store import FILE_NAME, SecretsFile

    project = project_root(Path.cwd())
    given: Path | None = getattr(options, "file", None)
    path = given.absolute() if given is not None else project / FILE_NAME
    command: str = options.command
    value = ""
    if command == "set":
        # Checked before any key is looked up: a value in argv is already in the shell history.
        value = read_value(options.name, options.value_in_argv, stdin)
    store = SecretsFile(path, KeyStores.default(os.environ))
    shown = _shown(path)
    if command == "init":
        where = store.init(options.key_store, project)
        return (
            f"created {shown}; its key is in {where}: every machine that reads the secrets "
            "needs a copy (docs/secrets.md)\n"
        )
    if command == "set":
        store.set(options.name, value)
        return f"set {options.name} in {shown}\n"
    if command == "unset":
        store.unset(options.name)
        return f"removed {options.name} from {shown}\n"
    if command == "list":
        return "".join(name + "\n" for name in sorted(store.read()))
    if command == "get":
        return store.get(options.name) + "\n"
    if command == "env":
        from blocktrain.core import envvars
        from blocktrain.secrets.names import export_lines

        return export_lines(store.read(), os.environ.get(envvars.SECRET_NAMES.name, ""))
    where, count = store.rotate()
    return (
        f"rotated the key of {shown} ({count} secrets); the new key is in {where}, and other "
        "machines need a copy of it\n"
    )


def read_value(name: str, value_in_argv: Sequence[str], stdin: TextIO) -> str:
    """The value of ``set``: a hidden prompt on a terminal, else all of stdin."""
    from blocktrain.secrets.names import check_name, value_from_input

    if value_in_argv or "=" in name:
        raise BlocktrainError(
            "set takes no value on the command line, where shell history and ps would keep it; "
            f"run `{PROG} set {name.partition('=')[0]}` and type it, or pipe it in"
        )
    check_name(name)
    if stdin.isatty():
        try:
            text = getpass.getpass(f"value of {name} (not shown): ")
        except EOFError:
            text = ""
    else:
        text = stdin.read()
    return value_from_input(text, name)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
