"""The training image of a baked project, as `make training-image` builds it.

The image goes into a ch-image storage folder of its own, .blocktrain/test-images in the
repository (ignored by git), so a later session finds the base (and, for an unchanged lock,
every layer but the project's) already built. The project is baked by plain cookiecutter with
its defaults, `make init` and `make data` done, its files committed.
"""

from __future__ import annotations

import os
import pwd
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The template's own test helpers: how a project is baked and its commands run.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "template"))
from template_project import REPO, Baked, clean_env, cookiecutter  # pyright: ignore[reportMissingImports]

STORAGE = REPO / ".blocktrain" / "test-images"
IMAGE_LINK = "build/training.img"


@dataclass(frozen=True)
class BuiltImage:
    project: Baked
    path: Path
    """The image folder (build/training.img links to it)."""
    digest: str
    """What `make training-image` printed."""
    build_s: float


def build_image(tmp: Path) -> BuiltImage:
    env = clean_env(tmp)
    # What a login shell has; ch-run needs it (the launcher says so when it is missing).
    env["USER"] = pwd.getpwuid(os.getuid()).pw_name
    done = cookiecutter(tmp, env, os.path.relpath(REPO, tmp), "-o", tmp)
    assert done.returncode == 0, done.stderr
    root = tmp / "drone-target-recognition"
    env["PATH"] = f"{root / '.venv' / 'bin'}:{env['PATH']}"
    project = Baked(root=root, package="drone_target_recognition", env=env)
    project.run("make", "init", timeout=600)
    project.run("make", "data", timeout=300)
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t",
                                                 "commit", "-qm", "baked"]):  # fmt: skip
        project.run("git", *argv)
    started = time.monotonic()
    built = project.run(
        "make", "training-image", env={"CH_IMAGE_STORAGE": str(STORAGE)}, timeout=1500
    )
    seconds = time.monotonic() - started
    digest = re.search(r"^digest\s+(sha256:[0-9a-f]{64})$", built.stdout, re.MULTILINE)
    assert digest is not None, built.stdout[-3000:]
    print(f"make training-image: {seconds:.0f} s")
    return BuiltImage(
        project=project,
        path=(root / IMAGE_LINK).resolve(),
        digest=digest.group(1),
        build_s=seconds,
    )
