"""The container renderers and the profile's ``container`` key: pure functions, golden outputs.

The command lines are compared with golden files in tests/unit/golden/container-*.txt; after
an intended change regenerate them with
``BLOCKTRAIN_UPDATE_GOLDEN=1 pytest tests/unit/test_container.py`` and review the diff.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from blocktrain.data.cache.config import CacheConfig
from blocktrain.launch.containers.runtime import Bind, Container, command, data_dirs, task_binds
from blocktrain.launch.profile import ProfileError, load_profile
from blocktrain.launch.slurm import batch

GOLDEN = Path(__file__).parent / "golden"
PROJECT = "/home/ada/shapes"
DATA = ["/home/ada/.cache/blocktrain/data", "/local/ada"]

CASES = {
    "apptainer-gpu": (
        Container(runtime="apptainer", image="/shared/x.sif", binds=["/shared/sets:/data:ro"]),
        True,
    ),
    "apptainer-cpu": (Container(runtime="apptainer", image="/shared/x.sif", env={"A": 1}), False),
    "podman-gpu": (
        Container(runtime="podman", image="localhost/x:1", binds=["/s:/d:ro"], env={"A": "b c"}),
        True,
    ),
    "charliecloud": (
        Container(runtime="charliecloud", image="/img/x", binds=["/scratch"], env={"A": "1"}),
        True,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_runtime_renders_its_golden_command_line(name: str):
    box, gpus = CASES[name]
    rendered = shlex.join(command(box, project_root=PROJECT, data=DATA, gpus=gpus)) + "\n"
    golden = GOLDEN / f"container-{name}.txt"
    if os.environ.get("BLOCKTRAIN_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_gpus_are_passed_the_way_each_runtime_wants():
    apptainer = Container(runtime="apptainer", image="/x.sif")
    assert "--nv" in command(apptainer, project_root=PROJECT, data=[], gpus=True)
    assert "--nv" not in command(apptainer, project_root=PROJECT, data=[], gpus=False)
    podman = Container(runtime="podman", image="x")
    words = command(podman, project_root=PROJECT, data=[], gpus=True)
    assert words[words.index("--device") + 1] == "nvidia.com/gpu=all"
    assert "--device" not in command(podman, project_root=PROJECT, data=[], gpus=False)


def test_podman_is_told_which_variables_of_the_job_to_pass_in():
    podman = Container(runtime="podman", image="x")
    words = command(podman, project_root=PROJECT, data=[], gpus=False, job_env=["MY_FLAG"])
    passed = [words[i + 1] for i, word in enumerate(words) if word == "--env"]
    assert {"SLURM_*", "PYTHONPATH", "MY_FLAG"} <= set(passed)


def test_every_runtime_mounts_the_project_and_data_cache_and_starts_python_there():
    for runtime in ("apptainer", "podman", "charliecloud"):
        box = Container(runtime=runtime, image="/img")  # pyright: ignore[reportArgumentType]
        joined = " ".join(command(box, project_root=PROJECT, data=DATA, gpus=False))
        assert f"{PROJECT}:{PROJECT}" in joined
        assert all(f"{d}:{d}" in joined for d in DATA)
        assert joined.endswith("python")
        assert PROJECT in joined.split("/img")[0]  # the working folder, before the image


def test_charliecloud_execs_python_with_the_image_environment():
    words = command(
        Container(runtime="charliecloud", image="/img"), project_root=PROJECT, data=[], gpus=False
    )
    assert words[0] == "ch-run"
    assert "--set-env" in words  # the image's ENV: its PATH finds the image's python
    assert words[-3:] == ["/img", "--", "python"]


def test_binds_inside_the_project_or_twice_the_same_target_are_mounted_once():
    box = Container(runtime="charliecloud", image="/i", binds=[f"{PROJECT}/data", "/a:/b", "/c:/b"])
    binds = task_binds(box, PROJECT, [f"{PROJECT}/.cache", "/cache"])
    assert binds == [Bind(PROJECT, PROJECT), Bind("/cache", "/cache"), Bind("/a", "/b")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data", "must be an absolute path"),
        ("/a:/b:rx", "'ro' or 'rw'"),
        ("/a::ro", "SRC:DST:ro"),
        ("/a:/b:ro:x", "SRC:DST:ro"),
    ],
)
def test_bad_binds_are_refused(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        Container(runtime="apptainer", image="/x", binds=[text])


@pytest.mark.parametrize(
    "environ", [{}, {"XDG_CACHE_HOME": "/xdg"}, {"DATA_PATH": "/d", "DATA_EPHEMERAL_PATH": "/e"}]
)
def test_the_data_cache_folder_is_the_one_the_data_cache_reads(environ: dict[str, str]):
    assert data_dirs(environ, str(Path.home())) == [
        str(CacheConfig.from_environ(environ).persistent)
    ]
    # A level named through the task's own variables is each node's: no bind for it.
    assert data_dirs({"DATA_PATH": "$SLURM_TMPDIR/data"}, "/home/ada") == []


def _profile(tmp_path: Path, text: str, *overrides: str):
    (tmp_path / "slurm").mkdir(exist_ok=True)
    (tmp_path / "slurm" / "p.yaml").write_text(text)
    return load_profile(tmp_path, "p", overrides)


def test_the_container_key_is_checked_like_every_other_key(tmp_path: Path):
    base = "nodes: 1\ncontainer:\n  runtime: charliecloud\n  image: build/training.img\n"
    profile = _profile(tmp_path, base)
    assert profile.container == Container(
        runtime="charliecloud", image=str(tmp_path.resolve() / "build/training.img")
    )  # a relative image is the project's, not the job's working folder
    with pytest.raises(ProfileError, match=r"p\.yaml:3: container\.runtime: expected one of"):
        _profile(tmp_path, base.replace("charliecloud", "docker"))
    with pytest.raises(ProfileError, match=r"container\.bind: unknown field.*binds"):
        _profile(tmp_path, base + "  bind: [/a]\n")
    with pytest.raises(ProfileError, match=r"missing required field.*image"):
        _profile(tmp_path, "container: {runtime: podman}\n")
    with pytest.raises(ProfileError, match="ch-run mounts binds read-write"):
        _profile(tmp_path, base, "container.binds=[/a:/b:ro]")


def test_the_old_flat_image_key_names_its_new_place(tmp_path: Path):
    with pytest.raises(ProfileError) as caught:
        _profile(tmp_path, "nodes: 1\nimage: /x.sif\nbinds: []\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'slurm' / 'p.yaml'}:2: image: ")
    assert "container: {runtime: apptainer, image: IMAGE, binds: [...]}" in message


def test_a_podman_image_is_a_reference_not_a_path(tmp_path: Path):
    profile = _profile(tmp_path, "container: {runtime: podman, image: 'localhost/x:1'}\n")
    assert profile.container is not None
    assert profile.container.image == "localhost/x:1"


def test_the_requeue_stays_outside_the_container(tmp_path: Path):
    profile = _profile(
        tmp_path, "tasks_per_node: 2\ncontainer: {runtime: charliecloud, image: /i}\n"
    )
    plan = batch.plan(
        profile,
        job_name="train",
        folder=tmp_path / "submitit",
        project_root=tmp_path,
        host_python="/venv/bin/python",
        code_paths=[str(tmp_path / "code")],
        requeue_dir=tmp_path / "requeue",
        data=["/cache"],
    )
    script = batch.render(plan)
    srun = next(line for line in script.splitlines() if line.startswith("srun"))
    assert f"ch-run --home --set-env --bind={tmp_path}:{tmp_path} --bind=/cache:/cache" in srun
    assert srun.endswith(f"/i -- python -u -m submitit.core._submit {tmp_path / 'submitit'}")
    teardown = script[script.index("# teardown") :]
    assert "scontrol requeue" in teardown
    assert "ch-run" not in teardown
