"""The repository's ``.envrc`` loads the secrets, and still loads without the file or its key.

direnv evaluates ``.envrc`` with bash after defining its standard library; the few functions
this ``.envrc`` calls are defined here as direnv defines them (``log_error`` and
``log_status`` write ``direnv: MESSAGE`` to stderr), so the test needs bash but not direnv. It runs in a copy of the
file in a temporary project, in direnv's default mode and in its ``strict_env`` mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENVRC = Path(__file__).resolve().parents[2] / ".envrc"
STDLIB = """
log_error() { echo "direnv: $*" >&2; }
log_status() { echo "direnv: $*" >&2; }
has() { type "$1" >/dev/null 2>&1; }
watch_file() { :; }
PATH_add() { PATH="$PWD/$1:$PATH"; }
"""
SHOW = 'printf "%s|%s|%s" "${CANARY_VALUE-unset}" "${BLOCKTRAIN_SECRET_NAMES-unset}" "$VIRTUAL_ENV"'


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "proj"
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    shutil.copy(ENVRC, root / ".envrc")
    env = {
        k: v for k, v in os.environ.items() if k not in {"CANARY_VALUE", "BLOCKTRAIN_SECRET_NAMES"}
    }
    env |= {
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    return root, env


def load(root: Path, env: dict[str, str], strict: bool) -> tuple[str, str]:
    mode = "set -euo pipefail\n" if strict else ""
    done = subprocess.run(
        ["bash", "-c", f"{mode}{STDLIB}\nsource ./.envrc\n{SHOW}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def blocktrain(root: Path, env: dict[str, str], *argv: str, stdin: str = "") -> None:
    subprocess.run(
        [Path(sys.executable).parent / "blocktrain", "secrets", *argv],
        cwd=root, env=env, input=stdin, text=True, check=True, capture_output=True,
    )  # fmt: skip


@pytest.mark.parametrize("strict", [False, True])
def test_envrc_exports_the_secrets(project: tuple[Path, dict[str, str]], strict: bool) -> None:
    root, env = project
    blocktrain(root, env, "init")
    blocktrain(root, env, "set", "CANARY_VALUE", stdin="it's a canary")
    out, err = load(root, env, strict)
    assert out == f"it's a canary|CANARY_VALUE|{root}/.venv"
    assert err == ""


@pytest.mark.parametrize("strict", [False, True])
def test_envrc_without_a_secrets_file_still_loads(
    project: tuple[Path, dict[str, str]], strict: bool
) -> None:
    root, env = project
    out, err = load(root, env, strict)
    assert out == f"unset|unset|{root}/.venv"
    assert err == (
        "direnv: no secrets.enc, so no credentials loaded: 'blocktrain secrets init' creates it\n"
    )


@pytest.mark.parametrize("strict", [False, True])
def test_envrc_without_the_key_still_loads_and_says_why(
    project: tuple[Path, dict[str, str]], strict: bool
) -> None:
    root, env = project
    blocktrain(root, env, "init")
    blocktrain(root, env, "set", "CANARY_VALUE", stdin="it's a canary")
    shutil.rmtree(Path(env["XDG_CONFIG_HOME"]))
    out, err = load(root, env, strict)
    assert out == f"unset|unset|{root}/.venv"
    assert err.startswith(f"direnv: secrets.enc not loaded: no key for {root}/secrets.enc")
    assert err.count("\n") == 1
