"""Fit the template's poetry.lock to the new project's blocktrain source, then say where the
project is and what to run first (cookiecutter renders this file)."""

import json
import sys
from pathlib import Path

STEPS = """\
Created {folder}

Next, in that folder (its README explains each step):
  git init && git add -A && git commit -m "New project"
  make init                         # .venv from the lock, blocktrain from {source}
  make data                         # the synthetic drone/bird/aircraft/sky dataset
  make train ARGS=experiments/baseline.yaml
"""

if __name__ == "__main__":
    source = json.loads(r"""{{ cookiecutter | blocktrain_choice | tojson }}""")["source"]
    sys.path.insert(0, str(Path(r"""{{ cookiecutter | template_folder }}""") / "hooks"))
    from template_lock import baked_lock  # hooks/template_lock.py, beside this file's original

    lock, project = Path("poetry.lock"), Path.cwd()
    pyproject = Path("pyproject.toml").read_text()
    lock.write_text(baked_lock(lock.read_text(), pyproject, source, project))
    sys.stdout.write(STEPS.format(folder=project, source=source))
