"""A slow entry module import is named in one line with the packages it brought in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from blocktrain.entry.importcost import heavy_packages, slow_import_line

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def test_third_party_packages_are_counted_and_the_rest_left_out(tmp_path: Path):
    project = tmp_path / "project"
    new = ["torch", "torch.nn", "torch.cuda", "numpy", "json", "_ssl", "blocktrain.x", "mine"]
    files = {
        "torch": "/venv/site-packages/torch/__init__.py",
        "numpy": "/venv/site-packages/numpy/__init__.py",
        "mine": str(project / "mine.py"),
    }
    assert heavy_packages(new, files, project) == ["torch", "numpy"]


def test_the_line_is_said_only_for_a_slow_import():
    assert slow_import_line("train", 0.2, ["torch"]) is None
    line = slow_import_line("train", 2.34, ["torch", "numpy", "pandas", "scipy"])
    assert line is not None
    assert line.startswith("importing the entry module train took 2.3 s")
    assert "(torch, numpy, pandas, ... at its top)" in line
    assert "\n" not in line


def test_a_launch_names_the_slow_package_its_entry_module_imports(tmp_path: Path):
    """A real slurm-launch --dry-run whose entry module imports a package that takes 0.8 s."""
    site = tmp_path / "site" / "slowpackage"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("import time\ntime.sleep(0.8)\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.blocktrain]\nentry-module = "entry"\n')
    (project / "entry.py").write_text(
        "import slowpackage\n\n\ndef train(*, steps: int = 1) -> None:\n"
        '    """Train.\n\n    Args:\n        steps: how many\n    """\n'
    )
    (project / "slurm").mkdir()
    (project / "slurm" / "local.yaml").write_text((REPO / "slurm" / "local.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(site.parent)}
    done = subprocess.run(
        [str(BIN / "slurm-launch"), "train", "--dry-run"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if "importing the entry module" in ln]
    assert line.startswith("slurm-launch: importing the entry module entry took ")
    assert "(slowpackage at its top)" in line
