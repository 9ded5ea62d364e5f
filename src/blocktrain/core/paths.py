"""Where a project keeps its state: the project root and every path under ``.blocktrain/``.

The one owner of these names: launchers, jobs, trackers and the CLIs derive every folder and
marker file from a :class:`Layout`, so that a file written by one is found by the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIR = ".blocktrain"


def project_root(start: Path) -> Path:
    """The nearest folder holding pyproject.toml or .git, else ``start`` itself."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return start


def import_paths(code_dir: Path) -> list[str]:
    """Where Python finds the project's modules inside a copy: ``src/`` layout first."""
    paths = [code_dir / "src", code_dir]
    return [str(p) for p in paths if p.is_dir()]


@dataclass(frozen=True, slots=True)
class RunFiles:
    """One run's folder (``.blocktrain/runs/<run id>``, ``BLOCKTRAIN_RUN_DIR`` in a job)."""

    folder: Path

    @property
    def record(self) -> Path:
        return self.folder / "run.json"

    @property
    def lock(self) -> Path:
        """Held while the record is read, changed and written back."""
        return self.folder / ".lock"

    @property
    def relaunch_lock(self) -> Path:
        """Held by ``slurm-launch --run-id`` from its check of the queue to its job's record, so
        that of two concurrent relaunches one submits and the other sees its job."""
        return self.folder / ".relaunch.lock"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def downloaded(self) -> Path:
        """Checkpoints fetched from the run's MLflow artifacts when none is local."""
        return self.folder / "downloaded"

    @property
    def stop_marker(self) -> Path:
        """Left by slurm-stop: the next restart signal checkpoints and ends, not requeues."""
        return self.folder / "stop"

    @property
    def finished_marker(self) -> Path:
        """Left when the entry function returned, so that a stray requeue does not run it again."""
        return self.folder / "finished"

    @property
    def restart_counts(self) -> Path:
        """Restarts spent so far, by cause (JSON)."""
        return self.folder / "restarts.json"

    @property
    def requeue_requests(self) -> Path:
        """The cause each attempt asked to be requeued for, by job and Slurm restart count
        (JSON); an attempt missing there was requeued by Slurm itself (a node failure)."""
        return self.folder / "requeue-requests.json"

    @property
    def last_crash(self) -> Path:
        """How the latest crashed attempt crashed (JSON), compared with the next one's crash."""
        return self.folder / "last-crash.json"

    @property
    def rendezvous(self) -> Path:
        """Where the tasks of one attempt agree on a port."""
        return self.folder / "rendezvous"


@dataclass(frozen=True, slots=True)
class LaunchFiles:
    """One launch's folder (``.blocktrain/launches/<launch id>``): what its jobs run from."""

    folder: Path

    @property
    def code(self) -> Path:
        """The frozen copy of the project's code that every attempt imports."""
        return self.folder / "code"

    @property
    def submitit(self) -> Path:
        """submitit's pickles and Slurm's per-task output files."""
        return self.folder / "submitit"

    @property
    def requeue(self) -> Path:
        """Requeue markers, one per job, that the batch script acts on after the step ends."""
        return self.folder / "requeue"

    @property
    def git_diff(self) -> Path:
        """The uncommitted changes the code copy was made with (also an MLflow artifact)."""
        return self.folder / "git.diff"

    @property
    def watcher_log(self) -> Path:
        """The output of the job that records how the launch's job ended (``%j``: its id)."""
        return self.folder / "finalize-%j.out"

    @property
    def sweep(self) -> Path:
        """A launch of several runs: their parent run, names and swept values (JSON)."""
        return self.folder / "sweep.json"

    @property
    def sweep_lock(self) -> Path:
        """Held while the sweep's runs are read and its summary written."""
        return self.folder / "sweep.lock"

    @property
    def sweep_summary(self) -> Path:
        """``sweep_summary.csv`` and ``.json``, uploaded to the parent run once all runs ended."""
        return self.folder / "sweep-summary"


@dataclass(frozen=True, slots=True)
class LogFiles:
    """One run's logs (``.blocktrain/logs/<run key>``): an ``attempt-N`` folder per attempt."""

    folder: Path

    def attempt(self, number: int) -> Path:
        return self.folder / f"attempt-{number}"

    def attempt_record(self, number: int) -> Path:
        """When and where an attempt ran (JSON)."""
        return self.attempt(number) / "attempt.json"

    def rank_log(self, number: int, rank: int, stream: str) -> Path:
        """One rank's captured ``out`` or ``err`` stream in an attempt (a rank runs on one
        node; its record says which)."""
        return self.attempt(number) / f"rank-{rank}.{stream}"

    def rank_record(self, number: int, rank: int) -> Path:
        """Where one rank of an attempt ran: node, node rank, local rank (JSON)."""
        return self.attempt(number) / f"rank-{rank}.json"

    def rank_records(self, number: int) -> list[Path]:
        return sorted(self.attempt(number).glob("rank-*.json"))

    @property
    def status(self) -> Path:
        """The run's last known state (JSON), what slurm-status shows without asking MLflow."""
        return self.folder / "status.json"

    @property
    def code(self) -> Path:
        """The uncommitted changes (``git.diff``) of the code the run started from."""
        return self.folder / "code"

    @property
    def attempt_tables(self) -> Path:
        """``attempts.json`` and ``attempts.csv``: a row per attempt, uploaded to the run."""
        return self.folder / "attempts"

    def attempt_numbers(self) -> list[int]:
        numbers = (name.removeprefix("attempt-") for name in _names(self.folder, "attempt-*"))
        return sorted(int(n) for n in numbers if n.isdigit())


def unsent_dir(log_root: Path) -> Path:
    """MLflow records kept on disk while the tracking server was unreachable."""
    return log_root / "unsent"


def _names(folder: Path, pattern: str) -> list[str]:
    return [path.name for path in folder.glob(pattern)]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a project keeps launch state; every path is derived from the project root."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def runs(self) -> Path:
        return self.state / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def run(self, run_id: str) -> RunFiles:
        return RunFiles(self.run_dir(run_id))

    def record_path(self, run_id: str) -> Path:
        return self.run(run_id).record

    def checkpoints(self, run_id: str) -> Path:
        return self.run(run_id).checkpoints

    def launch_dir(self, launch_id: str) -> Path:
        return self.state / "launches" / launch_id

    def launch(self, launch_id: str) -> LaunchFiles:
        return LaunchFiles(self.launch_dir(launch_id))

    @property
    def logs(self) -> Path:
        """The tracker's log root (``BLOCKTRAIN_LOG_DIR`` in a job)."""
        return self.state / "logs"

    def run_logs(self, run_id: str) -> Path:
        return self.logs / run_id

    def log_files(self, run_id: str) -> LogFiles:
        return LogFiles(self.run_logs(run_id))

    @property
    def local_jobs(self) -> Path:
        """Jobs run without Slurm (``--executor local``): a state file per job, by job id."""
        return self.state / "local-jobs"

    def local_job(self, job_id: str) -> Path:
        """The state file of a local job (of its whole array, for an element ``L7_3``)."""
        return self.local_jobs / f"{job_id.split('_', 1)[0]}.json"

    def local_cancel(self, job_id: str) -> Path:
        """Left by ``slurm-cancel`` for the local job (or array element) to end at once."""
        return self.local_jobs / f"{job_id}.cancel"

    @property
    def local_job_counter(self) -> Path:
        """The last local job number given out, read and raised under its lock."""
        return self.local_jobs / "last-id"
