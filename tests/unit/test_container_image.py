"""What the launcher checks of a container before it creates anything, and the image digest.

The checks run for real against this machine's PATH and files; the launch goes through
:func:`blocktrain.launch.launcher.launch` with a scheduler that records submissions, so a
refusal is seen to create no folder, no MLflow store and no job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blocktrain.errors import BlocktrainError
from blocktrain.launch.containers import images
from blocktrain.launch.containers.runtime import Container
from blocktrain.launch.launcher import LaunchRequest, launch
from blocktrain.launch.slurm.commands import QueueEntry
from blocktrain.launch.slurm.submit import BatchJobs, Submitted

MODULE = "container_entry"


def tree(root: Path) -> Path:
    """A small image-like tree: folders, files of two modes, a link."""
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "usr" / "bin" / "python").write_bytes(b"\x7fELF not really")
    (root / "usr" / "bin" / "python").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("image\n")
    (root / "bin").symlink_to("usr/bin")
    return root


def on_path(folder: Path, monkeypatch: pytest.MonkeyPatch, *programs: str) -> None:
    """PATH holds these programs alone (links to `true`: the checks look for them, never start
    them)."""
    folder.mkdir()
    true = shutil.which("true")
    assert true is not None
    for name in programs:
        (folder / name).symlink_to(true)
    monkeypatch.setenv("PATH", str(folder))


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_tree_digest_follows_content_modes_and_links_not_place_or_time(
    tmp_path: Path, cache_home: Path
):
    first = tree(tmp_path / "a")
    copy = tmp_path / "b"
    shutil.copytree(first, copy, symlinks=True)
    os.utime(copy / "etc" / "hostname", (0, 0))
    value = images.tree_digest(first)
    assert value.startswith("sha256:")
    assert images.tree_digest(copy) == value
    (copy / "etc" / "hostname").write_text("other\n")
    changed = images.tree_digest(copy)
    assert changed != value
    (copy / "etc" / "hostname").write_text("image\n")
    assert images.tree_digest(copy) == value
    (copy / "etc" / "hostname").chmod(0o600)
    assert images.tree_digest(copy) != value


def test_digests_are_cached_until_the_image_changes(tmp_path: Path, cache_home: Path):
    root = tree(tmp_path / "img")
    value = images.digest("charliecloud", str(root))
    assert value == images.tree_digest(root)
    assert len(list((cache_home / "blocktrain" / "image-digests").iterdir())) == 1
    (root / "etc" / "new").write_text("x")
    assert images.digest("charliecloud", str(root)) == images.tree_digest(root) != value
    sif = tmp_path / "x.sif"
    sif.write_bytes(b"sif bytes" * 1000)
    assert images.digest("apptainer", str(sif)) == (
        "sha256:" + hashlib.sha256(sif.read_bytes()).hexdigest()
    )


def test_a_missing_runtime_names_the_program_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    on_path(tmp_path / "bin", monkeypatch)  # nothing installed
    box = Container(runtime="charliecloud", image=str(tree(tmp_path / "img")))
    with pytest.raises(BlocktrainError, match=r"charliecloud: ch-run is not installed here"):
        images.check(box, tmp_path, [], "ada")


def test_charliecloud_needs_user_and_mount_points_in_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    on_path(tmp_path / "bin", monkeypatch, "ch-run")
    img = tree(tmp_path / "img")
    project = Path("/srv/project")
    box = Container(runtime="charliecloud", image=str(img))
    with pytest.raises(BlocktrainError, match=r"ch-run needs USER.*export USER=\$\(id -un\)"):
        images.check(box, project, [], None)
    with pytest.raises(BlocktrainError) as caught:
        images.check(box, project, [], "ada")
    assert str(caught.value) == (
        f"image {img} has no folder /srv/project to mount /srv/project on (ch-run cannot make "
        "one); rebuild it with `make training-image MOUNTS=/srv/project`"
    )
    (img / "srv" / "project").mkdir(parents=True)
    data = tmp_path / "data-cache"  # under /tmp, which ch-run shares with the host
    images.check(box, project, [str(data)], "ada")
    assert data.is_dir()  # made: no runtime mounts a missing folder


def test_a_missing_image_names_the_build_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    on_path(tmp_path / "bin", monkeypatch, "apptainer")
    box = Container(runtime="apptainer", image=str(tmp_path / "missing.sif"))
    with pytest.raises(BlocktrainError, match=r"missing\.sif not found; build it with `make"):
        images.check(box, tmp_path, [], "ada")


@dataclass
class RecordingScheduler:
    submitted: list[BatchJobs] = field(default_factory=list[BatchJobs])

    def submit(self, jobs: BatchJobs) -> list[Submitted]:
        self.submitted.append(jobs)
        return [Submitted(job_id="1", watcher_id="2")]

    def queued(self, job_ids: Sequence[str]) -> list[QueueEntry]:
        del job_ids
        return []


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "proj"
    (root / "slurm").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[tool.blocktrain]\nentry-module = "{MODULE}"\n')
    (root / f"{MODULE}.py").write_text('def train(*, steps: int = 5) -> None:\n    """Train."""\n')
    (root / "slurm" / "local.yaml").write_text("tasks_per_node: 2\ntime: 30\n")
    yield root
    sys.modules.pop(MODULE, None)


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ("{runtime: charliecloud, image: missing.img}", "missing.img not found; build it with"),
        ("{runtime: docker, image: x}", "container.runtime: expected one of"),
        ("{runtime: apptainer, image: x.sif}", "apptainer is not installed here"),
    ],
)
def test_a_container_that_cannot_run_is_refused_before_anything_is_created(
    project: Path, container: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    on_path(tmp_path / "bin", monkeypatch, "ch-run")  # not apptainer
    scheduler = RecordingScheduler()
    request = LaunchRequest(entry="train", slurm=(f"container={container}",))
    with pytest.raises(BlocktrainError, match=message):
        launch(request, root=project, scheduler=scheduler, environ={"USER": "ada"})
    assert scheduler.submitted == []
    assert not (project / ".blocktrain").exists()  # no launch folder, code copy or record
    assert not (project / "mlflow.db").exists()  # no MLflow run
