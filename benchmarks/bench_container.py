"""The training image with Charliecloud: build and rebuild times, throughput and job start
inside it, each beside its baseline in the same run.

    .venv/bin/python benchmarks/bench_container.py        (make bench)

1. Build: scripts/training-image on a copy of this toolkit (its lock, blocktrain), into the
   storage the tests use (.blocktrain/test-images, or $BLOCKTRAIN_BENCH_STORAGE): the base
   comes from that storage's cache when there (said in the output). Then one line is added to
   a module of the copy and the image rebuilt: only the last layers run again.
2. Throughput: the same training loop (a small CNN on fixed random images, 2 threads), in
   the image (`ch-run`) and on this machine's .venv, alternated, the best of five each;
   prints samples/s and the ratio container / host. On a machine others use, single runs
   vary by tens of percent: the best of several is the figure to compare.
3. Job start: a tiny DDP job (tests/integration/slurm/project/restartable.py) launched with
   and without the container, seconds from `slurm-launch` to its first training step. On the
   local Slurm cluster when BLOCKTRAIN_BENCH_SLURM_CONF names one (make bench sets it when
   one is up), else with `--executor local`.

Prints figures and ratios; asserts nothing. Needs root (debootstrap) for a new base,
Charliecloud with python3-lark, and uv's cache filled by `make init`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent
STORAGE = Path(os.environ.get("BLOCKTRAIN_BENCH_STORAGE") or REPO / ".blocktrain" / "test-images")
REPEATS = 5

LOOP = """
import time, torch
from torch import nn
torch.manual_seed(0); torch.set_num_threads(2)
net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(), nn.Linear(64, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(64, 3, 48, 48), torch.randint(0, 10, (64,))
def step():
    opt.zero_grad(); nn.functional.cross_entropy(net(x), y).backward(); opt.step()
for _ in range(5): step()
start = time.perf_counter()
for _ in range(60): step()
print("SAMPLES_PER_S", 60 * 64 / (time.perf_counter() - start))
"""


def show(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def env() -> dict[str, str]:
    found = dict(os.environ)
    found.setdefault("USER", pwd.getpwuid(os.getuid()).pw_name)
    return found


def build(project: Path, link: Path) -> tuple[float, str]:
    """Seconds of one scripts/training-image run, and what it printed."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, REPO / "scripts" / "training-image", "--project", project,
         "--storage", STORAGE, "--link", link],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(), check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"training-image failed:\n{done.stdout[-3000:]}")
    return time.monotonic() - started, done.stdout


def toolkit_copy(folder: Path) -> Path:
    for name in ("pyproject.toml", "requirements.lock", "README.md"):
        shutil.copy(REPO / name, folder / name)
    shutil.copytree(REPO / "src", folder / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def builds(tmp: Path) -> Path:
    project, link = toolkit_copy(tmp / "toolkit"), tmp / "training.img"
    base_cached = (STORAGE / "img").is_dir() and any(
        p.name.startswith("blocktrain-base+") for p in (STORAGE / "img").iterdir()
    )
    first, printed = build(project, link)
    layers = len(re.findall(r"^ *\d+\. ", printed, re.MULTILINE))
    show(f"build:                 {first:7.1f} s  (base {'cached' if base_cached else 'made'};"
          f" {layers} instructions run, the rest from the cache)")  # fmt: skip
    with (project / "src" / "blocktrain" / "errors.py").open("a") as module:
        module.write(f"# a one-line change {time.time()}\n")
    again, printed = build(project, link)
    layers = len(re.findall(r"^ *\d+\. ", printed, re.MULTILINE))
    show(f"rebuild, one line:     {again:7.1f} s  ({layers} instructions run)")
    size = re.search(r"^size\s+(.*)$", printed, re.MULTILINE)
    show(f"image size:            {size.group(1) if size else '?'}")
    return link.resolve()


def samples_per_s(argv: list[str]) -> float:
    done = subprocess.run([*argv, LOOP], capture_output=True, text=True, env=env(), check=True)
    return float(done.stdout.split("SAMPLES_PER_S")[1])


def throughput(image: Path) -> None:
    host = [str(VENV / "python"), "-c"]
    inside = ["ch-run", "--set-env", str(image), "--", "python", "-c"]
    best = {"host": 0.0, "container": 0.0}
    for _ in range(REPEATS):
        best["host"] = max(best["host"], samples_per_s(host))
        best["container"] = max(best["container"], samples_per_s(inside))
    show(f"throughput host:       {best['host']:7.1f} samples/s")
    show(f"throughput container:  {best['container']:7.1f} samples/s")
    show(f"ratio container/host:  {best['container'] / best['host']:7.3f}  (target >= 0.98)")


def job_project(folder: Path) -> Path:
    (folder / "slurm").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "integration" / "slurm" / "project" / "restartable.py", folder)
    shutil.copy(REPO / "slurm" / "local.yaml", folder / "slurm" / "local.yaml")
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "bench"\nversion = "0"\n\n'
        '[tool.blocktrain]\nentry-module = "restartable"\n'
    )
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return folder


def to_first_step(project: Path, extra: list[str], cluster: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [str(VENV / "slurm-launch"), "train", "--set", "steps=20", "--set", "step_seconds=0",
         *extra],
        cwd=project, capture_output=True, text=True, env={**env(), **cluster}, check=True,
    )  # fmt: skip
    run_id = done.stdout.split()[1]
    log = project / ".blocktrain" / "logs" / run_id / "attempt-1" / "rank-0.out"
    while not (log.exists() and " loss " in log.read_text()):
        if time.monotonic() - started > 600:
            sys.exit(f"no training step after 600 s: {log}")
        time.sleep(0.2)
    seconds = time.monotonic() - started
    db = project / "mlflow.db"
    query = "select status from runs where run_uuid=?"
    while True:  # let the job end before the next one starts: one job at a time
        with sqlite3.connect(db) as connection:
            [status] = connection.execute(query, (run_id,)).fetchone()
        if status in ("FINISHED", "FAILED", "KILLED"):
            break
        time.sleep(0.5)
    return seconds


def job_start(image: Path, tmp: Path) -> None:
    conf = os.environ.get("BLOCKTRAIN_BENCH_SLURM_CONF")
    cluster = {"SLURM_CONF": str(Path(conf).resolve())} if conf else {}
    where = [] if conf else ["--executor", "local"]
    project = job_project(tmp / "jobs")
    container = ["--slurm", f"container={{runtime: charliecloud, image: {image}}}"]
    host = min(to_first_step(project, where, cluster) for _ in range(2))
    inside = min(to_first_step(project, [*where, *container], cluster) for _ in range(2))
    kind = "Slurm" if conf else "local executor"
    show(f"job start host:        {host:7.1f} s  (slurm-launch to first step, {kind})")
    show(f"job start container:   {inside:7.1f} s  ({inside - host:+.1f} s)")


def main() -> None:
    if shutil.which("ch-run") is None:
        sys.exit("charliecloud is not installed: apt-get install charliecloud python3-lark")
    with tempfile.TemporaryDirectory(prefix="bench-container-") as tmp:
        (Path(tmp) / "toolkit").mkdir()
        image = builds(Path(tmp))
        throughput(image)
        job_start(image, Path(tmp))


if __name__ == "__main__":
    main()
