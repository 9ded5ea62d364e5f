"""Record the end of runs whose processes could not: SIGKILL, out of memory, node failure.

At submission, the launcher also submits a tiny job that depends on the run's job with
``afterany``, so it starts only once that job has left the queue for good (a requeued job has
not). It marks every run still RUNNING or SCHEDULED as FAILED, or KILLED when Slurm cancelled
the job, completes its last attempt's row with Slurm's word for the ending (``attempts.csv``,
see :mod:`blocktrain.track.attempts`), and sends the Slack message the dead process could not.
Then, for runs of a sweep, it closes the sweep's parent run once every run has ended
(:func:`blocktrain.launch.sweeps.parentrun.settle`).

    python -m blocktrain.launch.slurm.finalize PROJECT_ROOT RUN_ID [RUN_ID ...]
"""

from __future__ import annotations

import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from blocktrain.core.paths import Layout
from blocktrain.core.redact import Redactor
from blocktrain.launch.records import tracking
from blocktrain.launch.records.store import RunRecord, read_record
from blocktrain.launch.slurm import commands
from blocktrain.launch.sweeps import parentrun
from blocktrain.track import attempthistory
from blocktrain.track.attempts import slurm_cause
from blocktrain.track.backend import MlflowBackend

WATCHER_NAME = "blocktrain-finalize"
_OPEN = ("RUNNING", "SCHEDULED")


def final_status(slurm_state: str) -> str:
    """The MLflow status of a run whose job ended in ``slurm_state`` without reporting."""
    return "KILLED" if slurm_state.startswith("CANCELLED") else "FAILED"


def watcher_command(python: str, root: Path, run_ids: Sequence[str]) -> list[str]:
    """The command of the watcher job."""
    return [python, "-m", "blocktrain.launch.slurm.finalize", str(root), *run_ids]


def sbatch_watcher(job_id: str, python: str, root: Path, run_ids: Sequence[str], log: Path) -> str:
    """Submit the watcher for ``job_id`` (a whole array when it is one); returns its job id."""
    base_job = job_id.split("_", 1)[0]
    out = commands.run([
        "sbatch", "--parsable", f"--job-name={WATCHER_NAME}", f"--dependency=afterany:{base_job}",
        "--kill-on-invalid-dep=yes", "--ntasks=1", "--cpus-per-task=1", "--mem=512M", "--time=10",
        f"--output={log}", "--wrap", shlex.join(watcher_command(python, root, run_ids)),
    ])  # fmt: skip
    return out.strip().split(";", 1)[0]


def finalize(
    layout: Layout,
    run_ids: Sequence[str],
    job_state: Callable[[RunRecord], str] | None = None,
) -> list[tuple[str, str]]:
    """Close every open run among ``run_ids``; returns (run id, status set) for those it closed.

    ``job_state`` tells how a run's latest job ended: sacct's word by default; a local job's
    supervisor knows it itself.
    """
    closed: list[tuple[str, str]] = []
    sweeps: dict[str, None] = {}
    for run_id in run_ids:
        record = read_record(layout, run_id)
        if record.parent_run_id is not None:
            sweeps[record.launch_id] = None
        store = tracking.backend(record.tracking_uri, layout.root)
        status = str(store.get_run(run_id).info.status)
        if status not in _OPEN:
            continue
        state = (job_state or _slurm_state)(record)
        new_status = final_status(state)
        store.set_status(run_id, new_status, None)
        closed.append((run_id, new_status))
        _best_effort(_close_attempt, layout, store, record, state)
        _notify(record, state, new_status)
    for launch_id in sweeps:
        _best_effort(parentrun.settle, layout, launch_id)
    return closed


def _close_attempt(layout: Layout, store: MlflowBackend, record: RunRecord, state: str) -> None:
    """The last attempt's row, if its process could not write it, and the table's upload."""
    logs = layout.log_files(record.run_id)
    if attempthistory.close_unreported(logs, slurm_cause(state)) is not None:
        store.log_artifacts(record.run_id, str(attempthistory.write_tables(logs)), "")


def _best_effort(step: Callable[..., object], *args: object) -> None:
    """A step that must not keep the other runs from being closed; its error goes to the log."""
    try:
        step(*args)
    except Exception:  # noqa: BLE001 - printed for the watcher's log
        traceback.print_exc()


def _slurm_state(record: RunRecord) -> str:
    job = record.latest_job
    if job is None:
        return "UNKNOWN"
    try:
        out = commands.run(["sacct", "-X", "-P", "-n", "-o", "JobID,State", "-j", job.job_id])
    except commands.SlurmError:
        return "UNKNOWN"
    for line in out.splitlines():
        got_id, _, state = line.partition("|")
        if got_id == job.job_id:
            return state.split(" ", 1)[0] or "UNKNOWN"
    return "UNKNOWN"


def _notify(record: RunRecord, state: str, status: str) -> None:
    from blocktrain.notify import NotifyConfig, post  # only when a run ended unreported

    config = NotifyConfig.from_environ(os.environ)
    job = record.latest_job.job_id if record.latest_job else "?"
    text = (
        f":skull: run {record.run_id} (job {job}) ended without reporting: Slurm state {state}; "
        f"marked {status}"
    )
    post({"text": text}, config, Redactor.from_environ(os.environ))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        sys.stderr.write(
            "usage: python -m blocktrain.launch.slurm.finalize PROJECT_ROOT RUN_ID [...]\n"
        )
        return 2
    for run_id, status in finalize(Layout(Path(args[0])), args[1:]):
        sys.stdout.write(f"run {run_id}: marked {status}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
