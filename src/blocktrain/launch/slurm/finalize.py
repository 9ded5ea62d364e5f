"""Record the end of runs whose processes could not: SIGKILL, out of memory, node failure.

At submission, the launcher also submits a tiny job that depends on the run's job with
``afterany``, so it starts only once that job has left the queue for good (a requeued job has
not). It gives every run its one final state in MLflow and in ``status.json`` alike
(:mod:`blocktrain.launch.records.finalstate`): a run that nothing reported ended is marked
FAILED, or KILLED when Slurm cancelled the job; a run whose places disagree (a cancel that
raced its tasks' last words, a status that arrived out of order) gets the one they settle on.
For a run that ended without a word it also completes its last attempt's row with Slurm's
word for the ending (``attempts.csv``, see :mod:`blocktrain.track.attempts`) and sends the
Slack message the dead process could not. Then, for runs of a sweep, it closes the sweep's
parent run once every run has ended (:func:`blocktrain.launch.sweeps.parentrun.settle`).

    python -m blocktrain.launch.slurm.finalize PROJECT_ROOT RUN_ID [RUN_ID ...]
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from blocktrain.core.atomic import write_text_or_overwrite
from blocktrain.core.paths import Layout
from blocktrain.core.redact import Redactor
from blocktrain.launch.records import finalstate, tracking
from blocktrain.launch.records.store import RunRecord, read_record
from blocktrain.launch.slurm import commands
from blocktrain.launch.sweeps import parentrun
from blocktrain.restart.crashes import ending_note, read_crash
from blocktrain.track import attempthistory
from blocktrain.track.attempts import slurm_cause
from blocktrain.track.backend import MlflowBackend
from blocktrain.track.replay import replay_unsent


def finalize(
    layout: Layout,
    run_ids: Sequence[str],
    job_state: Callable[[RunRecord], str] | None = None,
) -> list[tuple[str, str]]:
    """Give every run among ``run_ids`` its one final state, in MLflow and status.json alike;
    returns (run id, status) for those where either changed.

    ``job_state`` tells how a run's latest job ended: sacct's word by default; a local job's
    supervisor knows it itself.
    """
    changed: list[tuple[str, str]] = []
    sweeps: dict[str, None] = {}
    for run_id in run_ids:
        record = read_record(layout, run_id)
        if record.parent_run_id is not None:
            sweeps[record.launch_id] = None
        store = tracking.backend(record.tracking_uri, layout.root)
        # No later attempt will send what the last one kept through an outage (its final
        # status, often): it goes now, with its own end time, before the end is judged.
        replay_unsent(store, layout.logs, run_id)
        ended = settle(layout, record, store, job_state or _slurm_state)
        if ended.changed:
            changed.append((run_id, ended.status))
        _best_effort(_close_attempt, layout, store, record, ended.job_state or "UNKNOWN")
        if ended.unreported:
            _notify(record, ended.job_state or "UNKNOWN", ended.status)
    for launch_id in sweeps:
        _best_effort(parentrun.settle, layout, launch_id)
    return changed


@dataclass(frozen=True, slots=True)
class Ended:
    status: str
    """The run's final state, now in MLflow and status.json."""
    changed: bool
    """MLflow or status.json said something else before."""
    unreported: bool
    """Nothing had recorded an end: the run's processes died without a word."""
    job_state: str | None
    """How its latest job ended, where that decided the state (else not asked)."""


def settle(
    layout: Layout, record: RunRecord, store: MlflowBackend, job_state: Callable[[RunRecord], str]
) -> Ended:
    """Write the run's final state (:func:`finalstate.settled`) wherever it differs."""
    run_id = record.run_id
    mlflow = str(store.get_run(run_id).info.status)
    logs = layout.log_files(run_id)
    try:
        old: str | None = logs.status.read_text()
    except OSError:
        old = None
    local = finalstate.local_said(old)
    finished = layout.run(run_id).finished_marker.exists()
    unreported = not finished and mlflow not in finalstate.FINAL and local not in finalstate.FINAL
    state = job_state(record) if unreported else None
    status = finalstate.settled(
        mlflow=mlflow, local=local, finished=finished, job_state=state or "UNKNOWN"
    )
    if mlflow != status:
        store.set_status(run_id, status, None)
    if local != status:
        reason = _unreported_reason(layout, record, state) if unreported else None
        text = finalstate.status_text(
            old, run_id=run_id, status=status, reason=reason, now=time.time()
        )
        with contextlib.suppress(OSError):  # a missing folder must not keep the others
            logs.folder.mkdir(parents=True, exist_ok=True)
        write_text_or_overwrite(logs.status, text, text)
    return Ended(status, mlflow != status or local != status, unreported, state)


def _unreported_reason(layout: Layout, record: RunRecord, state: str | None) -> str:
    """Why the run ended: the crash-loop guard's line when one rank's repeated crash ended it
    (rank 0, ended by srun, may have left before it could report), else the job's end."""
    job = record.latest_job
    recorded = read_crash(layout.run(record.run_id).folder)
    note = ending_note(recorded, job.job_id, record.run_id) if job is not None else None
    return note or f"its job ended {state} without a word from the run"


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
