"""Typed, documented entry functions as command-line programs.

``main(train, evaluate, predict)`` gives one defopt CLI with a subcommand per function (also
when there is only one, so that ``prog train ...`` reads the same everywhere); every
parameter is a ``--flag``, and ``--args FILE.yaml`` (repeatable) supplies keyword arguments.
Later files override earlier ones and explicit flags override files. :func:`resolve` runs the
same validation without running anything, for launchers; neither imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import inspect
import io
import os
import sys
import textwrap
import traceback
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, to_jsonable
from blocktrain.entry import bounded
from blocktrain.entry.argfiles import ArgSet, load_arg_files, merge_into
from blocktrain.entry.argtypes import Mismatch, coerce, describe
from blocktrain.errors import ArgsError, BlocktrainError

EntryFunction = Callable[..., Any]

ARGS_FLAG = "--args"
_ARGS_HELP = (
    "YAML file of arguments (repeatable: later files override earlier ones, explicit flags "
    "override files)"
)


def command_name(func: EntryFunction) -> str:
    """The subcommand name defopt gives a function: ``predict_video`` -> ``predict-video``."""
    return inspect.unwrap(func).__name__.replace("_", "-")


def validate(func: EntryFunction, args: ArgSet) -> dict[str, object]:
    """Check argument values against ``func``'s signature and convert them to its types."""
    name = command_name(func)
    parameters = _parameters(func)
    hints = _hints(func)
    converted: dict[str, object] = {}
    for key, value in args.values.items():
        if key not in parameters:
            raise ArgsError(_where(args, (key,)) + _unknown(name, key, parameters))
        try:
            converted[key] = coerce(value, hints.get(key, Any), ())
        except Mismatch as exc:
            path = (key, *exc.path)
            raise ArgsError(f"{_where(args, path)}{'.'.join(path)}: {exc.message}") from None
    return converted


def resolve(
    func: EntryFunction,
    arg_files: Iterable[str | Path] = (),
    overrides: Mapping[str, object] | None = None,
) -> dict[str, JSON]:
    """Validate files plus overrides against ``func`` and return every argument as JSON.

    Defaults fill the parameters nobody set; a missing required argument is an error. Nothing
    is run, created or imported beyond ``func``'s own module.
    """
    loaded = load_arg_files(arg_files)
    if overrides:
        merge_into(loaded.values, overrides)
        loaded.origins.update({(k,): "override" for k in overrides})
    given = validate(func, loaded)
    resolved: dict[str, JSON] = {}
    for pname, param in _parameters(func).items():
        if pname in given:
            resolved[pname] = to_jsonable(given[pname])
        elif param.default is not inspect.Parameter.empty:
            resolved[pname] = to_jsonable(param.default)
        else:
            expected = describe(_hints(func).get(pname, Any))
            flag = "--" + pname.replace("_", "-")
            raise ArgsError(
                f"missing required argument {pname!r} ({expected}) for {command_name(func)}: "
                f"set it in an --args file or as {flag}"
            )
    return resolved


def main(*funcs: EntryFunction, argv: Sequence[str] | None = None) -> object:
    """Run the command line: pick the function, apply ``--args`` files and flags, call it.

    Argument mistakes print one ``error:`` line and exit with status 2 before the function (and
    so any annotator around it) runs; a :class:`BlocktrainError` raised while running does the
    same. Any other exception prints its traceback, secrets masked, and exits with status 1.
    """
    if not funcs:
        raise TypeError("main() needs at least one entry function")
    try:
        call = bind(funcs, sys.argv[1:] if argv is None else list(argv))
    except BlocktrainError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    try:
        return call()
    except BlocktrainError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    except Exception:  # noqa: BLE001 - reported, then the exit status carries the failure
        # Python would print this traceback itself, unmasked, into the job's log.
        sys.stderr.write(Redactor.from_environ(os.environ)(traceback.format_exc()))
        raise SystemExit(1) from None


def bind(funcs: Sequence[EntryFunction], argv: list[str]) -> Callable[[], object]:
    """Parse ``argv`` into a ready call of one of ``funcs`` without calling it."""
    selected, rest = _select(funcs, argv)
    arg_files, rest = split_args_flag(rest)
    file_values = validate(selected, load_arg_files(arg_files)) if selected else {}
    proxies = [_proxy(f, file_values if f is selected else {}) for f in funcs]
    if selected is not None:
        rest = [command_name(selected), *rest]
    wants_help = any(a in ("-h", "--help") for a in rest)
    try:
        kwargs = _defopt_bind(proxies, rest, _yaml_parsers(funcs), wants_help)
    except Exception as exc:  # noqa: BLE001 - defopt raises bare Exception for unsupported types
        raise ArgsError(f"entry function cannot become a command line: {exc}") from None
    command = kwargs.pop("__command__")
    target = next(f for f in funcs if command_name(f) == command)
    return functools.partial(target, **kwargs)


def split_args_flag(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--args FILE`` / ``--args=FILE`` occurrences from the other arguments."""
    files: list[str] = []
    rest: list[str] = []
    items = iter(argv)
    for item in items:
        if item == ARGS_FLAG:
            value = next(items, None)
            if value is None or value.startswith("-"):
                raise ArgsError("--args needs a YAML file: --args experiments/baseline.yaml")
            files.append(value)
        elif item.startswith(ARGS_FLAG + "="):
            files.append(item.split("=", 1)[1])
        else:
            rest.append(item)
    return files, rest


def _select(
    funcs: Sequence[EntryFunction], argv: list[str]
) -> tuple[EntryFunction | None, list[str]]:
    if not argv or argv[0].startswith("-"):
        return None, argv  # defopt prints the top-level help or usage error
    by_name = {command_name(f): f for f in funcs}
    if argv[0] not in by_name:
        valid = ", ".join(by_name)
        raise ArgsError(f"unknown command {argv[0]!r}; valid commands: {valid}")
    return by_name[argv[0]], argv[1:]


def _proxy(func: EntryFunction, defaults: Mapping[str, object]) -> EntryFunction:
    """A stand-in with ``func``'s docs whose defaults are the file values.

    Every parameter becomes keyword-only so that a file-supplied default may precede a
    required parameter; defopt then turns each one into a flag.
    """
    name = command_name(func)

    @functools.wraps(func)
    def proxy(**kwargs: object) -> dict[str, object]:
        return {"__command__": name, **kwargs}

    params = [
        p.replace(
            kind=inspect.Parameter.KEYWORD_ONLY,
            default=defaults.get(p.name, p.default),
        )
        for p in _parameters(func).values()
    ]
    # inspect.signature stops at __signature__; __wrapped__ stays so that type hints resolve
    # in the user's module.
    proxy.__signature__ = inspect.Signature(params)  # pyright: ignore[reportAttributeAccessIssue]
    return proxy


def _defopt_bind(
    funcs: list[EntryFunction],
    argv: list[str],
    parsers: dict[Any, Callable[[str], Any]],
    wants_help: bool,
) -> dict[str, object]:
    import defopt  # pyright: ignore[reportMissingTypeStubs] - launchers only validate

    options: dict[str, Any] = {
        "argv": argv,
        "parsers": parsers,
        "short": {},
        "cli_options": "all",
        "show_types": True,
        "version": False,
    }
    if not wants_help:
        return defopt.bind(funcs, **options)()  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            defopt.bind(funcs, **options)  # pyright: ignore[reportUnknownMemberType]
    finally:
        sys.stdout.write(_with_args_help(out.getvalue()))
    raise SystemExit(0)


def _with_args_help(text: str) -> str:
    """Add ``--args`` to a command's help, aligned with argparse's column for descriptions."""
    lines = text.splitlines(keepends=True)
    marker = "show this help message and exit"
    at = next((i for i, line in enumerate(lines) if line.rstrip().endswith(marker)), None)
    if at is None or "{" in lines[0]:
        return text  # top-level help of several commands: --args belongs to each command
    column = lines[at].index(marker)
    flag = "  --args FILE.yaml"
    head = flag.ljust(column) if len(flag) < column - 1 else flag + "\n" + " " * column
    indent = " " * column
    body = textwrap.fill(_ARGS_HELP, width=79, initial_indent=indent, subsequent_indent=indent)
    body = body[column:]
    return "".join([*lines[: at + 1], head + body + "\n", *lines[at + 1 :]])


def _yaml_parsers(funcs: Sequence[EntryFunction]) -> dict[Any, Callable[[str], Any]]:
    """Flag parsers for types defopt cannot read from a string: YAML text such as ``{lr: 0.1}``."""
    parsers: dict[Any, Callable[[str], Any]] = {}
    for func in funcs:
        for hint in _hints(func).values():
            for tp in _walk(hint):
                if dataclasses.is_dataclass(tp) or tp is dict or typing.get_origin(tp) is dict:
                    parsers[tp] = functools.partial(_parse_yaml_flag, tp)
    return parsers


def _walk(tp: object) -> Iterable[object]:
    """``tp`` and the types inside it (union members, container items)."""
    yield tp
    if typing.get_origin(tp) is not dict:
        for arg in typing.get_args(tp):
            yield from _walk(arg)


def _parse_yaml_flag(tp: object, text: str) -> object:
    # ArgumentTypeError, unlike ValueError, keeps our message in argparse's error line.
    try:
        value = bounded.safe_load(text, "the value")
        return coerce(value, tp, ())
    except ArgsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except yaml.YAMLError as exc:  # a value the constructor cannot build
        raise argparse.ArgumentTypeError(f"not valid YAML: {' '.join(str(exc).split())}") from None
    except Mismatch as exc:
        where = ".".join(exc.path)
        raise argparse.ArgumentTypeError(f"{where + ': ' if where else ''}{exc.message}") from None


def _parameters(func: EntryFunction) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(func).parameters)
    for p in params.values():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ArgsError(
                f"entry function {command_name(func)} takes *{p.name}; "
                "entry functions need named, typed parameters"
            )
    return params


def _hints(func: EntryFunction) -> dict[str, Any]:
    return typing.get_type_hints(inspect.unwrap(func))


def _where(args: ArgSet, path: tuple[str, ...]) -> str:
    origin = args.origin(path)
    return f"{origin}: " if origin else ""


def _unknown(command: str, key: str, parameters: Mapping[str, object]) -> str:
    valid = ", ".join(parameters) or "(none)"
    close = difflib.get_close_matches(key, list(parameters), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown argument {key!r} for {command}{hint}; valid arguments: {valid}"
