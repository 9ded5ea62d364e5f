"""A baked project of the template, and how to drive `make project`, plain cookiecutter and the
project's commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import commands

REPO = Path(__file__).resolve().parents[3]
# The cookiecutter command of the environment running the tests.
COOKIECUTTER = Path(sys.executable).parent / "cookiecutter"
# What a copy of the template needs: the variables, the hooks, the project folder.
TEMPLATE_PARTS = ("cookiecutter.json", "hooks", "{{cookiecutter.project_slug}}")

# Variables of the surrounding shell or job that would send runs, data or jobs elsewhere.
# MAKEFLAGS/MAKELEVEL come from an outer `make test`: they would turn the inner make's
# messages into "make[1]: ..." and change what the commands print.
FOREIGN = (
    "MLFLOW_",
    "BLOCKTRAIN_",
    "SLURM_",
    "DATA_",
    "VIRTUAL_ENV",
    "COOKIECUTTER_",
    "MAKE",
    "MFLAGS",
)


def clean_env(tmp: Path) -> dict[str, str]:
    """The environment for baking and for the baked project's commands."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    config = tmp / "cookiecutter.yaml"
    # cookiecutter keeps a replay of every bake; keep it out of the home folder.
    config.write_text(f"replay_dir: {tmp / 'replay'}\ncookiecutters_dir: {tmp / 'templates'}\n")
    env["COOKIECUTTER_CONFIG"] = str(config)
    env["DATA_PATH"] = str(tmp / "data-cache")
    return env


def bake(output: Path, env: dict[str, str], *values: str) -> subprocess.CompletedProcess[str]:
    """``make project`` with --no-input: the toolkit's own command."""
    arguments = " ".join(["--no-input", *values])
    make = ["make", "--no-print-directory", "project", f"OUTPUT={output}", f"ARGS={arguments}"]
    return _run(make, REPO, env)


def cookiecutter(
    cwd: Path, env: dict[str, str], *argv: str | Path
) -> subprocess.CompletedProcess[str]:
    """Plain ``cookiecutter --no-input ARGV``, started in ``cwd``: how templates are used."""
    return _run([str(COOKIECUTTER), "--no-input", *map(str, argv)], cwd, env)


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def template_copy(folder: Path) -> Path:
    """The template alone (without the toolkit) copied into ``folder``."""
    for part in TEMPLATE_PARTS:
        source = REPO / part
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(source, folder / part, ignore=ignore)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / part)
    return folder


@dataclass(frozen=True)
class Baked:
    """A baked project with its own .venv, committed to its own git repository."""

    root: Path
    package: str
    env: dict[str, str]

    def run(
        self,
        *argv: str | Path,
        timeout: float = 300,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return commands.run(
            argv, env={**self.env, **(env or {})}, cwd=self.root, timeout=timeout, check=check
        )
