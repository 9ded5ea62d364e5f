"""The launcher's pure parts: profiles, Slurm times, sweeps, restart policy, batch scripts.

The batch scripts are compared with golden files in tests/unit/golden/; after an intended change
regenerate them with ``BLOCKTRAIN_UPDATE_GOLDEN=1 pytest tests/unit/test_launch_plan.py`` and
review the diff. They are also compared with what submitit itself writes for the same plan,
submitted to a stand-in ``sbatch``, so that a submitit upgrade that changes the script fails
here and not only in the Slurm integration test.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from blocktrain.errors import ArgsError
from blocktrain.launch.profile import Profile, ProfileError, Restarts, load_profile, time_minutes
from blocktrain.launch.slurm import batch, submit
from blocktrain.launch.sweeps.expand import argument_sets, dotted
from blocktrain.restart import RestartConfig, budget_allows, classify
from blocktrain.restart.jobspec import JobSpec
from blocktrain.restart.worker import Worker

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
PROJECT = Path("/home/ada/shapes")
LAUNCH = PROJECT / ".blocktrain" / "launches" / "20261123-101500-ab12"
DATA = "/home/ada/.cache/blocktrain/data"


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("00:30", 1),  # MM:SS rounds up to whole minutes
        ("90:00", 90),
        ("01:30:00", 90),
        ("1-00", 1440),
        ("1-02:30", 1590),
        ("2-00:00:01", 2881),
        (45, 45),
    ],
)
def test_slurm_times_in_minutes(text: str | int, minutes: int):
    assert time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "1:2:3:4", "ten", "-5", "00:00:00", 0, "1-x"])
def test_bad_slurm_times_are_refused(text: str | int):
    with pytest.raises(ValueError, match="time"):
        time_minutes(text)


def test_shipped_profiles_load():
    local = load_profile(REPO, "local")
    assert (local.world_size, local.gpus_per_node, local.container) == (2, 0, None)
    gpu = load_profile(REPO, "gpu")
    assert (gpu.nodes, gpu.tasks, gpu.world_size) == (2, 4, 8)
    assert gpu.container is not None
    assert gpu.container.runtime == "apptainer"


def test_overrides_are_typed_and_dotted():
    profile = load_profile(
        REPO, "local", ["time=02:00:00", "restarts.crashes=3", "sbatch.hold=true", "nodes=2"]
    )
    assert profile.time == "02:00:00"
    assert profile.restarts == Restarts(timeouts="unlimited", preemptions="unlimited", crashes=3)
    assert profile.sbatch == {"hold": True}
    assert profile.world_size == 4


def test_unknown_profile_key_lists_the_valid_ones(tmp_path: Path):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "p.yaml").write_text("nodes: 1\ngpu_per_node: 2\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(tmp_path, "p")
    message = str(caught.value)
    assert "p.yaml:2" in message
    assert "gpu_per_node" in message
    assert "gpus_per_node" in message  # the valid keys are listed


def test_wrong_profile_value_names_file_line_and_expectation(tmp_path: Path):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "p.yaml").write_text("nodes: two\n")
    with pytest.raises(ProfileError, match=r"p\.yaml:1.*nodes"):
        load_profile(tmp_path, "p")


def test_missing_profile_names_the_available_ones():
    with pytest.raises(ProfileError, match="available: gpu, local"):
        load_profile(REPO, "nope")


@pytest.mark.parametrize("item", ["time", "=3", "restarts.crashes.x=1"])
def test_malformed_overrides_are_refused(item: str):
    with pytest.raises(ProfileError, match="override"):
        load_profile(REPO, "local", [item])


def test_gpu_profile_tasks_follow_gpus():
    with pytest.raises(ValueError, match="one task per GPU"):
        Profile(gpus_per_node=4, tasks_per_node=2)
    assert Profile(gpus_per_node=4).tasks == 4


def test_restart_budgets_are_separate():
    budgets = Restarts(timeouts="unlimited", preemptions=2, crashes=0)
    assert budgets.allows("timeout", 10_000)
    assert budgets.allows("preemption", 1)
    assert not budgets.allows("preemption", 2)
    assert not budgets.allows("crash", 0)
    with pytest.raises(ValueError, match="crashes"):
        Restarts(crashes=-1)


def _restart_config(limit: float | None, lead: float = 120) -> RestartConfig:
    return RestartConfig(
        signal="USR1",
        time_limit_s=limit,
        lead_s=lead,
        run_dir=Path("/r"),
        marker_dir=Path("/m"),
        job_key="1",
    )


def test_restart_cause_classification():
    config = _restart_config(limit=3600, lead=120)
    # The warning signal near the limit is the time limit (Slurm may send it up to ~60 s early).
    assert classify("USR1", 3480, config, stop_marker=False) == "timeout"
    assert classify("USR1", 3430, config, stop_marker=False) == "timeout"
    # The same signal long before the limit is a preemption (or scancel --signal).
    assert classify("USR1", 600, config, stop_marker=False) == "preemption"
    assert classify("TERM", 3500, config, stop_marker=False) == "preemption"
    assert classify("USR1", 3500, config, stop_marker=True) == "stop"
    assert classify("USR1", 10**6, _restart_config(limit=None), stop_marker=False) == "preemption"


def test_budget_allows_counts_spent_per_cause():
    budgets = {"timeout": "unlimited", "preemption": 1, "crash": 0}
    assert budget_allows(budgets, "timeout", {"timeout": 99})
    assert budget_allows(budgets, "preemption", {"timeout": 5})
    assert not budget_allows(budgets, "preemption", {"preemption": 1})
    assert not budget_allows(budgets, "crash", {})


def test_restart_config_from_slurm_array_environment():
    env = {
        "BLOCKTRAIN_RUN_DIR": "/p/run",
        "BLOCKTRAIN_REQUEUE_DIR": "/p/requeue",
        "SLURM_JOB_ID": "131",
        "SLURM_ARRAY_JOB_ID": "128",
        "SLURM_ARRAY_TASK_ID": "3",
        "BLOCKTRAIN_TIME_LIMIT_S": "1800",
        "BLOCKTRAIN_RESTART_BUDGETS": '{"crash": 1}',
    }
    config = RestartConfig.from_environ(env)
    assert config is not None
    assert (config.job_key, config.time_limit_s, config.budgets) == ("128_3", 1800.0, {"crash": 1})
    assert RestartConfig.from_environ({"SLURM_JOB_ID": "1"}) is None


def test_dotted_sets_nest_and_parse_yaml():
    assert dotted(["optim.lr=0.1", "optim.betas=[0.9, 0.99]", "name=x", "flag="]) == {
        "optim": {"lr": 0.1, "betas": [0.9, 0.99]},
        "name": "x",
        "flag": None,
    }
    with pytest.raises(ArgsError, match="KEY=VALUE"):
        dotted(["lr"])


def test_sweep_file_runs_and_grid(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("steps: 10\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "base: [base.yaml]\nruns:\n  - {width: 8}\ngrid:\n  optim.lr: [0.1, 0.01]\n  aug: [true, false]\n"
    )
    sets = argument_sets([], [], sweep, {"seed": 3})
    assert len(sets) == 5
    assert all(s.files == (tmp_path / "base.yaml",) for s in sets)
    assert sets[0].overrides == {"width": 8, "seed": 3}
    assert sets[1].overrides == {"optim": {"lr": 0.1}, "aug": True, "seed": 3}
    assert sets[4].overrides == {"optim": {"lr": 0.01}, "aug": False, "seed": 3}
    assert [s.label for s in sets] == [f"sweep.yaml[{i}]" for i in range(5)]


def test_args_files_each_become_one_element(tmp_path: Path):
    base = tmp_path / "b.yaml"
    a, b = tmp_path / "a.yaml", tmp_path / "c.yaml"
    sets = argument_sets([base], [a, b], None, {})
    assert [s.files for s in sets] == [(base, a), (base, b)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runs: {width: 8}\n", "runs must be a list"),
        ("runs: [3]\n", "must be a mapping"),
        ("grids: {lr: [1]}\n", "unknown key 'grids'"),
        ("base: [b.yaml]\n", "no elements"),
        ("runs: [\n", "malformed YAML"),
        ("- 1\n", "is a mapping"),
    ],
)
def test_bad_sweep_files_say_what_is_wrong(tmp_path: Path, text: str, message: str):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(text)
    with pytest.raises(ArgsError, match=message):
        argument_sets([], [], sweep, {})


def test_args_and_sweep_together_are_refused(tmp_path: Path):
    with pytest.raises(ArgsError, match="not both"):
        argument_sets([], [tmp_path / "a.yaml"], tmp_path / "s.yaml", {})


def _plan(profile: Profile, folder: Path = LAUNCH / "submitit") -> batch.BatchPlan:
    return batch.plan(
        profile,
        job_name="shapes-train",
        folder=folder,
        project_root=PROJECT,
        host_python="/home/ada/shapes/.venv/bin/python",
        code_paths=[str(LAUNCH / "code")],
        requeue_dir=LAUNCH / "requeue",
        data=[DATA],
    )


@pytest.mark.parametrize(("name", "array"), [("local", None), ("gpu", None), ("local", 4)])
def test_batch_script_matches_golden(name: str, array: int | None):
    script = batch.render(_plan(load_profile(REPO, name)), array_size=array)
    golden = GOLDEN / f"{name}{f'-array{array}' if array else ''}.sbatch"
    if os.environ.get("BLOCKTRAIN_UPDATE_GOLDEN") == "1":
        golden.write_text(script)
    assert script == golden.read_text()


@pytest.mark.parametrize(("name", "array"), [("local", None), ("gpu", None), ("local", 4)])
def test_batch_script_is_the_one_submitit_submits(
    name: str, array: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``--dry-run`` shows :func:`batch.render`; a job runs what submitit writes. Both come from
    the same plan, submitted here through blocktrain's own :func:`submit.submit` to a stand-in
    ``sbatch`` that keeps the script. Nothing is exempt from the comparison: the parts that
    could legitimately differ, the paths (the submitit folder, its log files) and the
    pickled-job command line (``python -u -m submitit.core._submit FOLDER``), are made from
    the plan's folder and Python on both sides, so they match too.
    """
    bin_dir, kept = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    stand_ins = {
        "sbatch": f'cp "$1" {kept}\necho "Submitted batch job 4242"',
        "srun": "exit 0",  # submitit looks for it on PATH
        "scontrol": 'echo "MaxArraySize = 1001"',  # asked before an array is submitted
    }
    for command, body in stand_ins.items():
        (bin_dir / command).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan = _plan(load_profile(REPO, name), folder=tmp_path / "launch" / "submitit")
    spec = JobSpec(
        run_id="r1", entry="shapes.entry:train", args={}, code_dir=str(LAUNCH / "code"),
        run_dir=str(tmp_path / "run"), log_dir=str(tmp_path / "logs"),
        requeue_dir=str(LAUNCH / "requeue"),
    )  # fmt: skip
    job_ids = submit.submit(plan, [Worker(spec)] * (array or 1))
    assert job_ids == ([f"4242_{i}" for i in range(array)] if array else ["4242"])
    assert kept.read_text() == batch.render(plan, array_size=array)


def test_gpu_tasks_run_inside_the_image_and_requeue_outside():
    profile = load_profile(REPO, "gpu")
    script = batch.render(_plan(profile))
    srun = next(line for line in script.splitlines() if line.startswith("srun"))
    words = shlex.split(srun)
    at = words.index("apptainer")
    assert words[at : at + 3] == ["apptainer", "exec", "--nv"]
    assert ["--bind", f"{PROJECT}:{PROJECT}"] == words[at + 3 : at + 5]
    assert words[at + 5 : at + 7] == ["--bind", f"{DATA}:{DATA}"]
    assert words[at + 7 : at + 9] == ["--bind", "/shared/datasets:/data:ro"]
    assert profile.container is not None
    assert words[words.index(profile.container.image) + 1] == "python"
    after = script[script.index(srun) + len(srun) :]
    assert "scontrol requeue" in after
    assert "apptainer" not in after  # the requeue runs in the batch shell, not the image
    assert "#SBATCH --signal=USR2@300" in script
    assert "#SBATCH --requeue" in script
    assert "#SBATCH --exclusive" in script


def test_cpu_profile_has_no_container_and_no_gpu_request():
    script = batch.render(_plan(load_profile(REPO, "local")))
    assert "apptainer" not in script
    assert "--gpus" not in script
    assert "#SBATCH --ntasks-per-node=2" in script
    assert "#SBATCH --signal=USR2@60" in script
    assert "wckey" not in script


def test_profile_environment_is_exported_before_the_tasks_start():
    profile = load_profile(REPO, "local", ["env={OMP_NUM_THREADS: 1, NOTE: 'a b'}"])
    script = batch.render(_plan(profile))
    setup = script[: script.index("srun")]
    assert "export OMP_NUM_THREADS=1\n" in setup
    assert "export NOTE='a b'\n" in setup


def test_bad_environment_names_are_refused():
    with pytest.raises(ProfileError, match="not a valid environment variable name"):
        load_profile(REPO, "local", ["env={'A-B': 1}"])
