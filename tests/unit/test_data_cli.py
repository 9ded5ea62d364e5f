"""`blocktrain cache size|clean|fetch` on a cache of local entries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blocktrain.cli.main import main

FILES = {"a/1.txt": b"one", "b/2.txt": b"two" * 100}


@pytest.fixture
def levels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATA_PATH", str(tmp_path / "shared"))
    monkeypatch.setenv("DATA_EPHEMERAL_PATH", str(tmp_path / "node"))
    for name, data in FILES.items():
        (tmp_path / "ds" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / name).write_bytes(data)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["cache", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_fetch_size_and_clean(levels: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = run(capsys, "fetch", str(levels / "ds"))
    assert code == 0
    local = Path(out.strip())
    assert local.parent == levels / "node"
    assert (local / "b" / "2.txt").read_bytes() == FILES["b/2.txt"]

    code, out, _ = run(capsys, "size")
    assert code == 0
    assert f"persistent: {levels / 'shared'}\n" in out
    assert f"ephemeral: {levels / 'node'}\n" in out
    assert f"  {local.name}        2 files      303 B  complete  {levels / 'ds'}\n" in out
    assert out.endswith("both levels: 1 entry, 303 B\n")

    code, out, _ = run(capsys, "clean", "ds")
    assert (code, out) == (0, "no cache entry matches 'ds' in persistent\n")
    code, out, _ = run(capsys, "clean", "ds", "--ephemeral")
    assert code == 0
    assert out == f"removed ephemeral {local.name} (303 B, {levels / 'ds'})\n"
    assert not local.exists()


def test_user_errors_are_one_line_and_exit_2(
    levels: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    code, _, err = run(capsys, "fetch", str(levels / "missing"))
    assert code == 2
    assert err == f"blocktrain cache: error: {levels / 'missing'} does not exist; check the path\n"
    monkeypatch.delenv("DATA_EPHEMERAL_PATH")
    code, _, err = run(capsys, "clean", "--ephemeral")
    assert code == 2
    assert err.startswith("blocktrain cache: error: DATA_EPHEMERAL_PATH is not set")
    with pytest.raises(SystemExit) as caught:
        run(capsys, "clean", "--ephemeral", "--all")
    assert caught.value.code == 2


def test_help_and_no_heavy_imports():
    code = (
        "import sys; from blocktrain.cli.main import main;"
        "main(['cache', 'size']);"
        "print(sorted(m for m in ('torch', 'boto3', 'botocore', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"
    helped = subprocess.run(
        [sys.executable, "-m", "blocktrain.cli.main", "cache", "clean", "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert helped.returncode == 0
    assert "--ephemeral" in helped.stdout
    assert "--all" in helped.stdout
