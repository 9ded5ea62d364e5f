"""slurm-launch across the nodes of the local multi-node cluster: a 2-node x 2-task DDP run that
runs into its time limit, is preempted twice and loses a node, and ends bit-identical to the
same training on one node with 4 tasks; a sweep whose array elements land on different nodes."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
import torch
from launch_project import LaunchProject  # pyright: ignore[reportMissingImports]

from blocktrain.distributed import expand_hostlist
from slurm_service import SlurmCluster

pytestmark = pytest.mark.integration
FINAL = ("FINISHED", "FAILED", "KILLED")
STEPS = 300


def same_weights(a: Path, b: Path) -> bool:
    first, second = torch.load(a), torch.load(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def final_weights(project: LaunchProject, run_id: str) -> Path:
    return project.root / ".blocktrain" / "runs" / run_id / "final.pt"


def placement(project: LaunchProject, run_id: str, attempt: int) -> dict[int, tuple[str, int, int]]:
    """``{rank: (node, node rank, local rank)}`` from the records the ranks left."""
    folder = project.root / ".blocktrain" / "logs" / run_id / f"attempt-{attempt}"
    records = [json.loads(p.read_text()) for p in folder.glob("rank-*.json")]
    return {r["rank"]: (r["node"], r["node_rank"], r["local_rank"]) for r in records}


def job_nodes(project: LaunchProject, job_id: str) -> list[str]:
    """The nodes of the job's current attempt, from squeue's compressed list (``node[1-2]``)."""
    listed = project.command("squeue", "-h", "-o", "%N", "-j", job_id).stdout.strip()
    return expand_hostlist(listed)


def training(project: LaunchProject, run_id: str, attempt: int) -> bool:
    """Two progress lines in this attempt: it is past its start-up and polls should_stop."""
    return project.log(run_id, attempt).count(" loss ") >= 2


def artifact_logs(project: LaunchProject, run_id: str) -> Path:
    with sqlite3.connect(project.root / "mlflow.db") as connection:
        (uri,) = connection.execute(
            "select artifact_uri from runs where run_uuid=?", (run_id,)
        ).fetchone()
    return Path(str(uri).removeprefix("file://")) / "logs"


def test_two_nodes_survive_a_time_limit_two_preemptions_and_a_lost_node(
    project: LaunchProject, multinode_cluster: SlurmCluster
):
    """Five attempts of one 2x2 run, one MLflow run, restarts counted by cause, exact weights."""
    rng = random.Random()
    (project.root / "exp.yaml").write_text(
        f"steps: {STEPS}\nstep_seconds: 0.25\ncheckpoint_every: 100\n"
    )
    (project.root / "reference.yaml").write_text(f"steps: {STEPS}\nstep_seconds: 0.0\n")
    run_id, job_id = project.launch(
        "train", "--args", "exp.yaml", "--slurm", "nodes=2", "--slurm", "tasks_per_node=2",
        "--slurm", "time=2", "--slurm", "signal_lead_s=60",
        "--slurm", "restarts.preemptions=2", "--slurm", "restarts.timeouts=1",
    )  # fmt: skip
    # Its first step (the time-limit signal may come at any step from there on).
    project.wait(lambda: " loss " in project.log(run_id, 1), 240, "attempt 1 to train")
    # The same training on one node with four tasks, while attempt 1 waits for its time limit.
    reference_id, _ = project.launch(
        "train", "--args", "reference.yaml", "--slurm", "nodes=1", "--slurm", "tasks_per_node=4"
    )
    # Attempt 1 runs into its time limit: Slurm's USR2 comes 60 s before it. The next attempts
    # get more time (raised before the requeue, so that none of them can run into it too).
    project.wait(lambda: "stopping after" in project.log(run_id, 1), 150, "the time-limit signal")
    assert project.command("scontrol", "update", f"JobId={job_id}", "TimeLimit=10").returncode == 0
    preempt = {2: ["scancel", "--signal=TERM", job_id], 3: ["scontrol", "requeue", job_id]}
    for attempt, command in preempt.items():
        project.wait(lambda a=attempt: training(project, run_id, a), 180, f"attempt {attempt}")
        project.wait(lambda: True, rng.uniform(0.5, 3.0), "a random point", interval=0.1)
        done = project.command(*command)
        assert done.returncode == 0, done.stderr
    # Attempt 4 loses its second node: the link goes silent and its processes die.
    project.wait(lambda: training(project, run_id, 4), 180, "attempt 4 to train")
    lost = job_nodes(project, job_id)[1]
    killed = multinode_cluster.script("kill-node", lost)
    assert f"{lost}: lost" in killed.stdout
    project.wait(lambda: project.queue_state(job_id) == "PENDING", 120, "the node-failure requeue")
    project.wait(
        lambda: project.run_status(run_id) in FINAL and project.queue_state(job_id) is None,
        400,
        "the run to end",
    )
    assert project.run_status(run_id) == "FINISHED"
    assert project.run_status(reference_id) == "FINISHED"
    assert same_weights(final_weights(project, run_id), final_weights(project, reference_id))

    assert project.tags(run_id)["blocktrain.attempt"] == "5"
    assert [v for _, v in project.metric_history(run_id, "attempt")] == [1.0, 2.0, 3.0, 4.0, 5.0]
    counts = json.loads((project.root / ".blocktrain/runs" / run_id / "restarts.json").read_text())
    assert counts == {"timeout": 1, "preemption": 2, "node_failure": 1}
    states = project.command("sacct", "-j", job_id, "--duplicates", "-X", "-n", "-P", "-o", "State")
    assert "NODE_FAIL" in states.stdout.split()
    for attempt in (2, 3, 4, 5):
        assert "resumed from step" in project.log(run_id, attempt)
    for attempt in range(1, 6):
        placed = placement(project, run_id, attempt)
        first, second = placed[0][0], placed[2][0]
        assert first != second
        assert placed == {
            0: (first, 0, 0), 1: (first, 0, 1), 2: (second, 1, 0), 3: (second, 1, 1)
        }  # fmt: skip
    assert lost not in {node for node, _, _ in placement(project, run_id, 5).values()}
    # The lost attempt's logs: on the shared disk, by node, and in MLflow (uploaded again).
    shown = project.command("slurm-log", run_id[:8], "--node", lost, "--attempt", "4")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("resumed from step") == 2  # its two ranks, in their logs
    assert f"rank 2 on {lost}" in shown.stderr
    uploaded = artifact_logs(project, run_id)
    for attempt in range(1, 6):
        assert " loss " in (uploaded / f"attempt-{attempt}" / "rank-0.out").read_text()


def test_sweep_elements_land_on_different_nodes(project: LaunchProject):
    """Each element fills a node (one task of four CPUs): three elements, three nodes."""
    (project.root / "base.yaml").write_text("steps: 20\nstep_seconds: 0.0\n")
    (project.root / "sweep.yaml").write_text("base: [base.yaml]\ngrid:\n  seed: [1, 2, 3]\n")
    done = project.command(
        "slurm-launch", "train", "--sweep", "sweep.yaml", "--slurm", "nodes=1",
        "--slurm", "tasks_per_node=1", "--slurm", "cpus_per_task=4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_ids = [line.split()[1] for line in done.stdout.splitlines()]
    job_ids = [line.split()[3] for line in done.stdout.splitlines()]
    assert len({job.split("_")[0] for job in job_ids}) == 1
    project.wait(
        lambda: all(project.run_status(r) in FINAL for r in run_ids), 300, "three runs to end"
    )
    assert [project.run_status(r) for r in run_ids] == ["FINISHED"] * 3
    nodes = {placement(project, r, 1)[0][0] for r in run_ids}
    assert nodes == {"node1", "node2", "node3"}
