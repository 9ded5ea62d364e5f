"""fd-level capture: output of Python, of C-level writes and of child processes reaches the log."""

import os
import subprocess
import sys
import time
from pathlib import Path

from blocktrain.core.redact import Redactor
from blocktrain.track.capture import FdTee, captured

SECRET = "s3cr3t-value-42"


def run_child(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "MY_API_TOKEN": SECRET},
    )  # fmt: skip


def test_python_c_level_and_child_output_are_captured_and_masked(tmp_path: Path):
    code = """
import os, subprocess, sys
from pathlib import Path
from blocktrain.track.capture import captured
from blocktrain.core.redact import Redactor
redact = Redactor.from_environ(os.environ)
with captured(Path("out.log"), Path("err.log"), redact):
    print("from python", os.environ["MY_API_TOKEN"])
    os.write(1, b"from fd\\n")
    subprocess.run(["echo", "from child"], check=True)
    print("to stderr", file=sys.stderr)
print("after capture")
"""
    done = run_child(code, tmp_path)
    out = (tmp_path / "out.log").read_text()
    assert out == "from python ***\nfrom fd\nfrom child\n"
    assert (tmp_path / "err.log").read_text() == "to stderr\n"
    # The terminal still gets everything, masked too, and output after the block is not logged.
    assert done.stdout == "from python ***\nfrom fd\nfrom child\nafter capture\n"
    assert SECRET not in done.stdout


def test_secret_split_across_two_writes_is_still_masked(tmp_path: Path, capfd):
    log = tmp_path / "out.log"
    tee = FdTee(1, log, Redactor((SECRET,)))
    tee.start()
    try:
        os.write(1, SECRET[:6].encode())
        os.write(1, (SECRET[6:] + " done\n").encode())
    finally:
        tee.stop()
    assert log.read_text() == "*** done\n"
    assert SECRET not in capfd.readouterr().out


def test_partial_line_is_flushed_after_a_short_wait(tmp_path: Path, capfd):
    log = tmp_path / "out.log"
    with captured(log, tmp_path / "err.log", Redactor()):
        os.write(1, b"progress 50%\r")
        os.write(1, b"prompt> ")
        time.sleep(0.6)
        assert log.read_bytes() == b"progress 50%\rprompt> "
    assert "prompt> " in capfd.readouterr().out


def test_appends_across_blocks(tmp_path: Path):
    log = tmp_path / "out.log"
    for word in ("one", "two"):
        with captured(log, tmp_path / "err.log", Redactor()):
            os.write(1, f"{word}\n".encode())
    assert log.read_text() == "one\ntwo\n"
