"""Say where the new project is and what to run first (cookiecutter renders this file)."""

import json
import sys
from pathlib import Path

STEPS = """\
Created {folder}

Next, in that folder (its README explains each step):
  git init && git add -A && git commit -m "New project"
  make init                         # .venv from requirements.lock, blocktrain from {source}
  make data                         # the synthetic drone/bird/aircraft/sky dataset
  make train ARGS=experiments/baseline.yaml
"""

if __name__ == "__main__":
    source = json.loads(r"""{{ cookiecutter | blocktrain_choice | tojson }}""")["source"]
    sys.stdout.write(STEPS.format(folder=Path.cwd(), source=source))
