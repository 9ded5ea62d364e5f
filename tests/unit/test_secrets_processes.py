"""``blocktrain secrets`` as separate processes: concurrent changes, and the hidden prompt."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

BLOCKTRAIN = Path(sys.executable).parent / "blocktrain"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A project with a secrets file; keyring's own ``fail`` backend stands for a headless node."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    environ = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    subprocess.run([BLOCKTRAIN, "secrets", "init"], cwd=root, env=environ, check=True)
    return environ | {"PROJECT": str(root)}


def secrets(env: dict[str, str], *argv: str, stdin: str = "") -> str:
    done = subprocess.run(
        [BLOCKTRAIN, "secrets", *argv],
        cwd=env["PROJECT"],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_concurrent_set_commands_lose_nothing(env: dict[str, str]) -> None:
    """Six `blocktrain secrets set` processes started together."""
    names = [f"NAME_{i}" for i in range(6)]
    children = [
        subprocess.Popen(
            [BLOCKTRAIN, "secrets", "set", name],
            cwd=env["PROJECT"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        for name in names
    ]
    for child, name in zip(children, names, strict=True):
        assert child.stdin is not None
        child.stdin.write(f"value of {name}")
        child.stdin.close()
    assert [child.wait(timeout=60) for child in children] == [0] * len(names)
    assert secrets(env, "list").split() == names
    for name in names:
        assert secrets(env, "get", name) == f"value of {name}\n"


# Each process waits for the others to be ready, then sets its names as fast as it can, through
# the command's own main(): read, decrypt, change, encrypt, write; many times over.
BURST = """
import io, os, sys, time
from pathlib import Path
from blocktrain.cli import secrets
worker, count, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
Path(f"{go}.{worker}").touch()
while not go.exists():
    time.sleep(0.005)
for i in range(count):
    sys.stdin = io.StringIO(f"v{worker}-{i}")
    assert secrets.main(["set", f"W{worker}_{i}"]) == 0
"""


def test_bursts_of_sets_from_several_processes_lose_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    workers, count = 4, 25
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", BURST, str(w), str(count), str(go)],
            cwd=env["PROJECT"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for w in range(workers)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    assert [child.wait(timeout=120) for child in children] == [0] * workers
    expected = {f"W{w}_{i}": f"v{w}-{i}" for w in range(workers) for i in range(count)}
    names = secrets(env, "list").split()
    assert sorted(names) == sorted(expected)
    exported = secrets(env, "env")
    for name, value in expected.items():
        assert f"export {name}={value}\n" in exported


def test_set_on_a_terminal_prompts_without_echo(env: dict[str, str]) -> None:
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.chdir(env["PROJECT"])
        os.execve(BLOCKTRAIN, [str(BLOCKTRAIN), "secrets", "set", "TYPED_TOKEN"], env)  # noqa: S606
    seen = _read_until(terminal, b"(not shown): ")
    assert b"value of TYPED_TOKEN" in seen
    os.write(terminal, b"typed-secret-42\n")
    seen = _read_until(terminal, None)
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"typed-secret-42" not in seen
    assert b"set TYPED_TOKEN in secrets.enc" in seen
    assert secrets(env, "get", "TYPED_TOKEN") == "typed-secret-42\n"


def _read_until(fd: int, marker: bytes | None, timeout: float = 30) -> bytes:
    """What the pty shows, until ``marker`` appears (or until the child closes it)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child has exited
            return seen
        if not chunk:
            return seen
        seen += chunk
        if marker is not None and marker in seen:
            return seen
    raise AssertionError(f"timed out; the terminal showed {seen!r}")
