"""The requeue contract between a task and whatever requeues its job, written once.

A task that wants another attempt spends one unit of its cause's budget in the run's
``restarts.json``, notes the request with its Slurm restart count in ``requeue-requests.json``,
and leaves a marker, ``<BLOCKTRAIN_REQUEUE_DIR>/<job key>`` holding ``{"cause": ...}``. The
job key is ``<array job>_<array task>`` for an array element, else the job id
(:attr:`RestartConfig.job_key`). The marker has two readers, both here: the batch script's
teardown (:func:`teardown_lines`, bash, outside any container: it turns the marker into
``scontrol requeue``) and the local supervisor (:func:`requeue_asked`, for ``--executor
local``). Each reader removes the marker it acts on; a worker removes a stale one as its
attempt starts.

Each task runs under a small shell (:func:`task_wrapper`, outside any container) that writes its
Python's non-zero exit status to ``<BLOCKTRAIN_REQUEUE_DIR>/<job key>.<restart count>.<rank>.exit``
before the task ends, so before ``srun --kill-on-bad-exit`` ends the other tasks: a rank killed
outright (SIGKILL, the out-of-memory killer) leaves that much for the others to count
(:func:`task_exits`, :mod:`blocktrain.restart.endings`).

A node failure leaves no process to ask for anything: Slurm requeues the job itself (NODE_FAIL).
So when an attempt starts, rank 0 counts each earlier attempt of the job that asked for no
requeue as a ``node_failure`` (:func:`account_node_failures`); there is no budget for it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from blocktrain.core.atomic import write_text_atomic
from blocktrain.core.paths import RunFiles
from blocktrain.restart.config import RestartConfig

NODE_FAILURE = "node_failure"
"""The cause counted for an attempt that Slurm requeued without being asked (see above)."""


def request_requeue(config: RestartConfig, cause: str, spent: Mapping[str, int]) -> None:
    """Spend one unit of ``cause``'s budget and leave the marker the batch script acts on.

    The marker comes first and, when its content cannot be written (a full disk), as an empty
    file: its existence is what the readers act on, so the attempt is still requeued; the
    counts that could not be written are named on stderr (the attempt's log).

    An attempt spends one unit however many of its ranks ask: each rank that a SIGTERM reaches
    before its first step asks, and a crash that follows another rank's request is its
    consequence. Later requests leave the marker again and spend nothing. The request is
    recorded before the count, so that a rank that read the count after another rank spent it
    (as callers read ``spent`` first) also finds the request.
    """
    config.marker_dir.mkdir(parents=True, exist_ok=True)
    path = marker(config.marker_dir, config.job_key)
    requests = read_requests(config.run_dir)
    earlier = requests.get(config.job_key, {}).get(str(config.restart_count))
    try:
        _write_json(path, {"cause": earlier or cause})
    except OSError:
        path.touch()  # no space for its content: an empty marker still asks for the requeue
    if earlier is not None:
        return
    try:
        asked = {**requests.get(config.job_key, {}), str(config.restart_count): cause}
        _write_json(RunFiles(config.run_dir).requeue_requests, {**requests, config.job_key: asked})
        counts = {**spent, cause: spent.get(cause, 0) + 1}
        _write_json(RunFiles(config.run_dir).restart_counts, counts)
    except OSError as exc:
        sys.stderr.write(
            f"blocktrain: requeue for {cause} asked, but its count was not recorded ({exc}); "
            "the next attempt may count it as a node failure\n"
        )


def asked_cause(config: RestartConfig) -> str | None:
    """The cause this attempt (its job and Slurm restart count) asked a requeue for, if any."""
    asked = read_requests(config.run_dir).get(config.job_key, {})
    return asked.get(str(config.restart_count))


def read_counts(run_dir: Path) -> dict[str, int]:
    try:
        counts = json.loads(RunFiles(run_dir).restart_counts.read_text())
        return {str(k): int(v) for k, v in counts.items()}
    except (FileNotFoundError, ValueError):
        return {}


def read_requests(run_dir: Path) -> dict[str, dict[str, str]]:
    """``{job key: {Slurm restart count: cause}}`` of every requeue the run's jobs asked for."""
    try:
        raw = json.loads(RunFiles(run_dir).requeue_requests.read_text())
        return {str(job): {str(n): str(c) for n, c in asked.items()} for job, asked in raw.items()}
    except (FileNotFoundError, ValueError, AttributeError):
        return {}


def unrequested(restart_count: int, asked: Mapping[str, str]) -> list[int]:
    """The Slurm restart counts, before ``restart_count``, of the attempts that asked for no
    requeue (in ``asked``, by restart count): Slurm requeued those itself."""
    return [count for count in range(restart_count) if str(count) not in asked]


def account_node_failures(config: RestartConfig) -> list[int]:
    """Count the earlier attempts of this job that Slurm requeued unasked as node failures,
    once each (rank 0, as an attempt starts); the restart counts of those attempts."""
    requests = read_requests(config.run_dir)
    asked = requests.get(config.job_key, {})
    lost = unrequested(config.restart_count, asked)
    if not lost:
        return []
    spent = read_counts(config.run_dir)
    counts = {**spent, NODE_FAILURE: spent.get(NODE_FAILURE, 0) + len(lost)}
    _write_json(RunFiles(config.run_dir).restart_counts, counts)
    marked = {**asked, **{str(count): NODE_FAILURE for count in lost}}
    _write_json(RunFiles(config.run_dir).requeue_requests, {**requests, config.job_key: marked})
    return lost


def _write_json(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data))


def marker(marker_dir: Path, job_key: str) -> Path:
    """The marker a task leaves when its job (or array element) ``job_key`` must be requeued."""
    return marker_dir / job_key


def requeue_asked(marker_dir: Path, job_key: str) -> bool:
    """The local supervisor's reading of the marker: whether the attempt asked for another; the
    marker is removed, so that it is acted on once."""
    path = marker(marker_dir, job_key)
    asked = path.exists()
    path.unlink(missing_ok=True)
    return asked


_EXIT_SUFFIX = ".exit"
# The signals Slurm sends to every process of a step (the tasks' Python and this shell alike):
# the shell must outlive its Python to write its status, so it only notes them; the Python gets
# them with their default action, since a trapped signal is reset in a child.
_WRAPPER_TRAPS = "TERM INT HUP USR1 USR2 XCPU"


def task_wrapper(marker_dir: Path) -> list[str]:
    """The words before each task's command: a shell that runs it and writes its non-zero
    exit status where :func:`task_exits` reads it, then exits with the same status."""
    folder = shlex.quote(str(marker_dir))
    script = "; ".join([
        f"trap : {_WRAPPER_TRAPS}",
        '"$@"',
        "s=$?",
        'k="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"',
        f'f={folder}/"${{k:-$SLURM_JOB_ID}}.${{SLURM_RESTART_COUNT:-0}}.$SLURM_PROCID{_EXIT_SUFFIX}"',
        'if [ "$s" -ne 0 ]; then printf "%s\\n" "$s" > "$f.tmp" && mv -f "$f.tmp" "$f"; fi',
        'exit "$s"',
    ])  # fmt: skip
    return ["bash", "-c", script, "blocktrain-task"]


def exit_record(marker_dir: Path, job_key: str, restart_count: int, rank: int) -> Path:
    """Where the wrapper of task ``rank`` writes its exit status in this attempt."""
    return marker_dir / f"{job_key}.{restart_count}.{rank}{_EXIT_SUFFIX}"


def task_exits(config: RestartConfig) -> dict[int, int]:
    """``{rank: exit status}`` of the tasks of this attempt that ended with a non-zero one."""
    prefix = f"{config.job_key}.{config.restart_count}."
    found: dict[int, int] = {}
    try:
        paths = list(config.marker_dir.glob(f"{glob.escape(prefix)}*{_EXIT_SUFFIX}"))
    except OSError:
        return found
    for path in paths:
        rank = path.name.removeprefix(prefix).removesuffix(_EXIT_SUFFIX)
        try:
            found[int(rank)] = int(path.read_text().strip())
        except (OSError, ValueError):
            continue  # another job's key that starts alike, or a record being moved in
    return found


def remove_earlier_exits(config: RestartConfig) -> None:
    """Remove the exit records of this job's earlier attempts (rank 0, as an attempt starts)."""
    prefix = f"{config.job_key}."
    with contextlib.suppress(OSError):
        for path in config.marker_dir.glob(f"{glob.escape(prefix)}*{_EXIT_SUFFIX}"):
            count = path.name.removeprefix(prefix).split(".", 1)[0]
            if count.isdigit() and int(count) < config.restart_count:
                path.unlink(missing_ok=True)


def teardown_lines(marker_dir: Path) -> list[str]:
    """The batch script's reading of the marker, after ``srun``, outside any container: requeue
    this job (or array element) when rank 0 left the marker; the job key is built as
    :attr:`RestartConfig.job_key` builds it."""
    folder = shlex.quote(str(marker_dir))
    return [
        "blocktrain_status=$?",
        'blocktrain_key="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"',
        'blocktrain_key="${blocktrain_key:-$SLURM_JOB_ID}"',
        f'if [ -e {folder}/"$blocktrain_key" ]; then',
        f'    rm -f {folder}/"$blocktrain_key"',
        '    echo "blocktrain: requeueing $blocktrain_key"',
        '    scontrol requeue "$blocktrain_key"',
        "fi",
        'exit "$blocktrain_status"',
    ]
