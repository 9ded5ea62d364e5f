"""The chaos harness's I/O: services, real jobs, faults, sampling, and what is observed.

:class:`Services` starts what the episodes share once: the MLflow server
(``tests/mlflow_service.py``) and, for ``--executor slurm``, the local cluster
(``tests/slurm_service.py``). :class:`Episode` runs one :class:`~chaos.plan.EpisodePlan`: a
fresh project of the launcher tests (``tests/integration/slurm/launch_project.py``), one
``slurm-launch``, a thread sampling the run every :data:`SAMPLE_S`, the faults in order, the
user's recovery (``slurm-launch --run-id`` once the run left the queue unfinished), and at the
end an :class:`~chaos.invariants.Observed` built from the run record, MLflow's store,
``slurm-status``, ``sacct`` or the local job's state file, the logs and the checkpoints.
:func:`run_campaign` runs a baseline and the episodes and renders the report.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import select
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocktrain.launch.local.jobfiles import alive
from chaos import invariants
from chaos.invariants import (
    AttemptView,
    CheckpointView,
    FaultRecord,
    JobSpan,
    Leftovers,
    Observed,
    Reference,
    RelaunchBatch,
    Sample,
    StateView,
)
from chaos.plan import JOB_ARGS, Anchor, Config, EpisodePlan, Fault, Kind, plan_episode
from chaos.report import EpisodeResult, render
from mlflow_service import MlflowServer
from procfs import environ

# tests/ is on the path (``chaos`` is imported from it); the launcher tests' project is not.
LAUNCH_HELPERS = Path(__file__).resolve().parents[1] / "integration" / "slurm"
if str(LAUNCH_HELPERS) not in sys.path:
    sys.path.insert(0, str(LAUNCH_HELPERS))

from launch_project import LaunchProject  # noqa: E402  # pyright: ignore[reportMissingImports]

SAMPLE_S = 0.4
EPISODE_TIMEOUT_S = 300.0
"""From the launch until the run finished, faults and recoveries included."""
ANCHOR_TIMEOUT_S = 120.0
"""A local job's supervisor takes 60 s to end an attempt whose rank hangs in start-up."""
SETTLE_S = 1.2
"""No live job for this long: the run has left the queue (a requeue keeps it there)."""
OPEN_GRACE_S = 20.0
"""How long a run that left the queue may stay RUNNING in MLflow before it counts as settled."""
LEFTOVER_GRACE_S = 30.0
"""After the run finished, how long its jobs, processes and allocations may take to go."""
RELAUNCH_RETRY_S = 3.0
RELAUNCH_GIVE_UP_S = 90.0
MAX_RECOVERIES = 6
PROGRESS = re.compile(r"^step (\d+) loss ", re.MULTILINE)
RESUMED = re.compile(r"^resumed from step (\d+)", re.MULTILINE)
LOAD_ERROR = re.compile(r"checkpoint.*(error|cannot|does not|corrupt|truncat)", re.IGNORECASE)
TEMP_CHECKPOINT = re.compile(r"\.step-\d{9,}\.pt\.[0-9a-f]{8}\.tmp")
SLURM_LIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED")


# --- processes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    argv: tuple[str, ...]
    job: str | None
    """``SLURM_JOB_ID`` of its environment (a local task's too)."""
    rank: int | None
    """``SLURM_PROCID``."""

    @property
    def task(self) -> bool:
        """A rank's Python process (not srun, a batch script or a supervisor)."""
        return (
            self.rank is not None
            and bool(self.argv)
            and Path(self.argv[0]).name.startswith("python")
            and ("submitit.core._submit" in self.argv or "task" in self.argv)
        )


def _works_in(pid: int, root: Path) -> bool:
    """Whether the process's working folder is ``root`` or below it."""
    try:
        return Path(f"/proc/{pid}/cwd").readlink().is_relative_to(root)
    except OSError:
        return False


def processes(root: Path, jobs: Sequence[str] = ()) -> list[Proc]:
    """The live processes of the project at ``root``: those whose command line names it, and,
    when ``jobs`` are given, those whose environment says they run one of them."""
    needle = str(root).encode()
    wanted = set(jobs)
    found: list[Proc] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        if not raw:
            continue  # a zombie or a kernel thread
        named = needle in raw
        if not named and not wanted:
            continue
        env = environ(int(entry.name))
        job = env.get("SLURM_JOB_ID")
        if not named and (job not in wanted or not _works_in(int(entry.name), root)):
            # A job id alone is no proof: other clusters and local jobs on this machine (the
            # test suite's, running beside a campaign) number their jobs the same way.
            continue
        rank = env.get("SLURM_PROCID")
        argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
        found.append(
            Proc(int(entry.name), argv, job, int(rank) if rank and rank.isdigit() else None)
        )
    return found


def kill(pids: Sequence[int], number: int) -> list[int]:
    """Send a signal; the pids it reached."""
    reached: list[int] = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, number)
            reached.append(pid)
    return reached


class Inotify:
    """The names created in (or moved into) one folder, as they appear (Linux inotify)."""

    IN_CREATE = 0x100
    IN_MOVED_TO = 0x80

    def __init__(self, folder: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = self.IN_CREATE | self.IN_MOVED_TO
        if libc.inotify_add_watch(self.fd, bytes(folder), mask) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")

    def names(self, timeout: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, 65536)
        names: list[str] = []
        offset = 0
        while offset + 16 <= len(data):
            _, _, _, length = struct.unpack_from("iIII", data, offset)
            names.append(data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode())
            offset += 16 + length
        return names

    def close(self) -> None:
        os.close(self.fd)


# --- services ----------------------------------------------------------------------------------


class Services:
    """What the episodes of one campaign share: the tracking server, the Slurm cluster."""

    def __init__(self, config: Config, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.mlflow: MlflowServer | None = None
        self.cluster: Any = None  # slurm_service.SlurmCluster
        self.base_env: dict[str, str] = {}
        self.tracking_env: dict[str, str] = {}

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_", "BLOCKTRAIN_", "SLURM_", "PYTHONPATH"))
        }
        if self.config.tracking == "server":
            self.mlflow = MlflowServer(self.workdir / "mlflow-server")
            self.tracking_env = {"MLFLOW_TRACKING_URI": self.mlflow.up()}
        if self.config.executor == "slurm":
            from slurm_service import start_cluster  # pytest, imported only for a cluster

            (self.workdir / "slurm").mkdir(parents=True, exist_ok=True)
            try:
                self.cluster = start_cluster(self.workdir / "slurm", nodes=self.config.nodes)
            except BaseException as exc:  # noqa: BLE001 - pytest.fail raises an outcome
                raise RuntimeError(f"the local Slurm cluster did not start: {exc}") from None
            env["SLURM_CONF"] = str(self.cluster.conf)
        self.base_env = env

    def stop(self) -> None:
        if self.cluster is not None:
            from slurm_service import stop_cluster

            stop_cluster(self.cluster)
            self.cluster = None
        if self.mlflow is not None:
            self.mlflow.down()
            self.mlflow = None

    def store(self, project: Path) -> Path:
        """The SQLite file behind the runs' MLflow store."""
        if self.mlflow is not None:
            return self.mlflow.state_dir / "mlflow.db"
        return project / "mlflow.db"

    def local_slurm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        from slurm_service import SCRIPT

        state = str(self.cluster.state_dir)
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args, "--dir", state],
            env=self.cluster.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def cluster_up(self) -> None:
        """``scripts/local-slurm up`` (what is down comes back), tried three times; a cluster
        that does not come back is the harness's failure, not the code's."""
        error = ""
        for _ in range(3):
            done = self.local_slurm("up")
            if done.returncode == 0:
                return
            error = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
            time.sleep(5)
        raise RuntimeError(f"the local Slurm cluster did not come back: {''.join(error)}")

    def daemon_pid(self, daemon: str) -> int | None:
        path = Path(self.cluster.state_dir) / "pid" / f"{daemon}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None


# --- one episode ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """What the main thread and the sampler share about the run."""

    run_id: str = ""
    samples: list[Sample] = field(default_factory=list[Sample])
    stop: threading.Event = field(default_factory=threading.Event)


class Episode:
    def __init__(self, services: Services, plan: EpisodePlan, folder: Path) -> None:
        self.services = services
        self.plan = plan
        self.config = plan.config
        self.folder = folder
        self.project: LaunchProject = LaunchProject.create(folder / "project", services.base_env)
        self.project.env.update(services.tracking_env)  # create() drops MLFLOW_* variables
        self.root: Path = self.project.root
        self.shared = _Run()
        self.relaunches: list[RelaunchBatch] = []
        self.views: list[StateView] = []
        self.records: list[FaultRecord] = []
        self.recoveries = 0
        self.t0 = time.time()
        self.deadline = self.t0 + EPISODE_TIMEOUT_S + sum(f.down_s for f in plan.faults)
        self._sampler: threading.Thread | None = None

    def say(self, text: str) -> None:
        """A line of the episode's own log (``episode.log`` beside its project)."""
        with (self.folder / "episode.log").open("a") as log:
            log.write(f"t+{time.time() - self.t0:6.1f}s {text}\n")

    # ---- commands -------------------------------------------------------------------------

    def command(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.project.command(*argv, timeout=timeout)

    def launch(self) -> None:
        if self.config.executor == "slurm":
            self.services.cluster_up()  # whatever an earlier episode left down
        args = {**JOB_ARGS, "steps": self.config.steps}
        (self.root / "exp.yaml").write_text("".join(f"{k}: {v}\n" for k, v in args.items()))
        argv = ["slurm-launch", "train", "--args", "exp.yaml"]
        if self.config.executor == "local":
            argv += ["--executor", "local"]
        elif self.config.nodes > 1:
            argv += ["--slurm", f"nodes={self.config.nodes}", "--slurm", "tasks_per_node=1"]
        done = self.command(*argv)
        if done.returncode != 0:
            raise RuntimeError(f"slurm-launch failed: {done.stderr.strip()[-500:]}")
        self.shared.run_id = done.stdout.split()[1]
        self.say(f"launched: {done.stdout.strip()}")

    @property
    def run_id(self) -> str:
        return self.shared.run_id

    @property
    def run_dir(self) -> Path:
        return self.root / ".blocktrain" / "runs" / self.run_id

    @property
    def log_dir(self) -> Path:
        return self.root / ".blocktrain" / "logs" / self.run_id

    def record(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / "run.json").read_text())
        except (OSError, ValueError):
            return {}

    def jobs(self) -> list[str]:
        return [str(j["job_id"]) for j in self.record().get("jobs", [])]

    def watchers(self) -> list[str]:
        return [str(j["watcher_id"]) for j in self.record().get("jobs", []) if j.get("watcher_id")]

    # ---- what the sampler reads -------------------------------------------------------------

    def local_job(self, job_id: str) -> dict[str, Any] | None:
        path = self.root / ".blocktrain" / "local-jobs" / f"{job_id.split('_', 1)[0]}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def queue(self, jobs: Sequence[str]) -> dict[str, str] | None:
        """Job id -> state of the jobs still queued or running; None when it cannot be told."""
        if not jobs:
            return {}
        if self.config.executor == "local":
            live: dict[str, str] = {}
            for job_id in jobs:
                state = self.local_job(job_id)
                if state is None:
                    continue
                element = state["elements"][0]
                supervised = _alive(state.get("supervisor_pid"))
                if element["state"] in ("PENDING", "RUNNING", "REQUEUED") and supervised:
                    live[job_id] = str(element["state"])
            return live
        # The whole queue (the cluster is the campaign's own): `-j` fails outright when one of
        # the ids has been purged from slurmctld's memory (MinJobAge).
        done = self.command("squeue", "-h", "-o", "%i|%T", timeout=30)
        if done.returncode != 0:
            return None
        rows = (line.split("|", 1) for line in done.stdout.split())
        return {job: state for job, state in rows if job in jobs}

    def mlflow_status(self) -> str | None:
        if not self.run_id:
            return None
        try:
            with contextlib.closing(
                sqlite3.connect(self.services.store(self.root), timeout=5)
            ) as db:
                row = db.execute(
                    "select status from runs where run_uuid=?", (self.run_id,)
                ).fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def progress(self) -> tuple[int, int]:
        """(newest attempt, rank 0's progress lines in it)."""
        numbers = [
            int(p.name.removeprefix("attempt-"))
            for p in self.log_dir.glob("attempt-*")
            if p.name.removeprefix("attempt-").isdigit()
        ]
        if not numbers:
            return 0, 0
        newest = max(numbers)
        try:
            text = (self.log_dir / f"attempt-{newest}" / "rank-0.out").read_text(errors="replace")
        except OSError:
            return newest, 0
        return newest, len(PROGRESS.findall(text))

    def sample(self) -> Sample:
        jobs = self.jobs()
        queued = self.queue(jobs)
        running = {p.job for p in processes(self.root) if p.task and p.job in jobs}
        live = set(queued or {}) | {j for j in running if j is not None}
        attempt, progress = self.progress()
        return Sample(
            t=time.time(),
            live_jobs=tuple(sorted(live)),
            status=self.mlflow_status(),
            attempt=attempt,
            progress=progress,
            queue_known=queued is not None,
        )

    def _sample_loop(self) -> None:
        while not self.shared.stop.is_set():
            with contextlib.suppress(Exception):  # a torn file now and then: the next sample
                self.shared.samples.append(self.sample())
            self.shared.stop.wait(SAMPLE_S)

    def start_sampling(self) -> None:
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()

    def stop_sampling(self) -> None:
        self.shared.stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=30)

    def latest(self) -> Sample:
        samples = self.shared.samples
        return samples[-1] if samples else Sample(t=time.time(), queue_known=False)

    # ---- waiting, with the user's recovery --------------------------------------------------

    def finished(self) -> bool:
        """The run finished by its own account (its finished marker), and MLflow says so or
        its jobs have left the queue (a different word in MLflow is the invariants' to judge;
        a relaunch would only be refused)."""
        if not (self.run_dir / "finished").exists():
            return False
        return self.latest().status == "FINISHED" or self.settled()

    def settled(self) -> bool:
        """Its jobs (and, on Slurm, their watcher jobs) have left the queue for
        :data:`SETTLE_S`, and MLflow shows a final state (or :data:`OPEN_GRACE_S` passed)."""
        samples = self.shared.samples
        now = time.time()
        recent = [s for s in samples if s.t >= now - max(SETTLE_S, OPEN_GRACE_S)]
        quiet = [s for s in recent if s.t >= now - SETTLE_S]
        if len(quiet) < 2 or any(s.live_jobs or not s.queue_known for s in quiet):
            return False
        if self.config.executor == "slurm":
            watched = self.queue(self.watchers())
            if watched is None or watched:
                return False
        if self.latest().status in invariants.FINAL:
            return True
        empty_since = next(
            (s.t for s in reversed(samples) if s.live_jobs or not s.queue_known), self.t0
        )
        return now - empty_since >= OPEN_GRACE_S

    def advance(self, until: Callable[[], bool], timeout: float = ANCHOR_TIMEOUT_S) -> bool:
        """Wait until ``until()`` holds, recovering the run whenever it settles unfinished;
        False on ``timeout``, at the episode's deadline, or when the run has finished first."""
        give_up = min(time.time() + timeout, self.deadline)
        while time.time() < give_up:
            if until():
                return True
            if self.finished():
                return until()
            if self.settled() and not (self.run_dir / "finished").exists():
                self.recover()
            time.sleep(0.1)
        return False

    def recover(self) -> None:
        """What a user does with a run that left the queue unfinished: look at it, then
        ``slurm-launch --run-id`` (several at once, now and then), until one is accepted."""
        self.views.append(self.view())
        self.say(f"settled unfinished: {self.views[-1]}")
        if self.recoveries >= MAX_RECOVERIES:
            raise _GiveUpError(f"still unfinished after {MAX_RECOVERIES} relaunches")
        time.sleep(self.plan.relaunch_delay_s)
        count = self.plan.relaunchers_at(self.recoveries)
        self.recoveries += 1
        give_up = time.time() + RELAUNCH_GIVE_UP_S
        while True:
            batch = self.relaunch(count, after_finish=False)
            if batch.accepted:
                break
            if time.time() > give_up:
                raise _GiveUpError(
                    f"every relaunch refused: {batch.refused[-1] if batch.refused else ''}"
                )
            time.sleep(RELAUNCH_RETRY_S)
            count = 1
        # The new job in the record before the sampler's next look, so that it waits for it.
        self.advance_sampling()

    def advance_sampling(self) -> None:
        """Let the sampler take two samples after now."""
        now = time.time()
        end = now + 5
        while time.time() < end and sum(s.t > now for s in self.shared.samples) < 2:
            time.sleep(0.05)

    def relaunch(self, count: int, *, after_finish: bool) -> RelaunchBatch:
        argv = ["slurm-launch", "train", "--run-id", self.run_id]
        at = time.time()
        started = [
            subprocess.Popen(
                argv,
                cwd=self.root,
                env=self.project.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        accepted: list[str] = []
        refused: list[str] = []
        for process in started:
            try:
                out, err = process.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
                refused.append("slurm-launch --run-id hung for 180 s")
                continue
            if process.returncode == 0 and out.split()[:1] == ["run"]:
                accepted.append(out.split()[3])
            else:
                lines = (err.strip() or out.strip() or f"exit {process.returncode}").splitlines()
                refused.append(lines[-1][:300])
        batch = RelaunchBatch(
            t=at, count=count, accepted=tuple(accepted), refused=tuple(refused),
            after_finish=after_finish,
        )  # fmt: skip
        self.relaunches.append(batch)
        self.say(f"relaunch x{count}: accepted {list(accepted)}, refused {list(refused)}")
        return batch

    # ---- anchors -------------------------------------------------------------------------------

    def _mark(self) -> tuple[int, int, frozenset[int]]:
        latest = self.latest()
        tasks = frozenset(p.pid for p in processes(self.root) if p.task)
        return latest.attempt, latest.progress, tasks

    def trains_again(self, mark: tuple[int, int, frozenset[int]]) -> Callable[[], bool]:
        attempt, progress, _ = mark

        def check() -> bool:
            s = self.latest()
            return (s.attempt > attempt and s.progress >= 2) or (
                s.attempt == attempt and s.progress >= progress + 2
            )

        return check

    def starting(self, mark: tuple[int, int, frozenset[int]]) -> Callable[[], bool]:
        """New task processes whose attempt has not trained yet."""
        attempt, _, old_tasks = mark

        def check() -> bool:
            tasks = {p.pid for p in processes(self.root) if p.task}
            if not tasks or tasks & old_tasks:
                return False
            s = self.latest()
            return s.attempt <= attempt or s.progress == 0

        return check

    # ---- faults ------------------------------------------------------------------------------

    def run_faults(self) -> None:
        mark = (0, 0, frozenset[int]())
        for fault in self.plan.faults:
            note = self.reach(fault, mark)
            if note is not None:
                self.say(f"{fault.describe()}: not injected, {note}")
                self.records.append(FaultRecord(fault=fault, at=None, note=note))
                continue
            tasks = self._mark()[2]
            self.say(f"{fault.describe()}: injecting")
            at, note = self.inject(fault)
            self.say(f"{fault.describe()}: {'injected' if at else 'not injected'} {note}")
            self.records.append(FaultRecord(fault=fault, at=at, note=note))
            if at is not None:  # the run as it was at the instant of the fault
                prior = [s for s in self.shared.samples if s.t <= at]
                last = prior[-1] if prior else Sample(t=at)
                mark = (last.attempt, last.progress, tasks)

    def reach(self, fault: Fault, mark: tuple[int, int, frozenset[int]]) -> str | None:
        """Wait for the fault's anchor and delay; None when reached, else why not."""
        if fault.anchor is Anchor.FINISHED:
            if not self.advance(self.finished, EPISODE_TIMEOUT_S):
                return "the run did not finish"
            return None
        anchored = False
        if fault.anchor is Anchor.STARTUP:  # after a fault, only if it started an attempt
            anchored = self.advance(self.starting(mark), 15 if mark[2] else ANCHOR_TIMEOUT_S)
        if not anchored and not self.advance(self.trains_again(mark)):
            return "the run finished first" if self.finished() else "no training to anchor on"
        if fault.delay_s and fault.anchor is not Anchor.CHECKPOINT:
            self.advance(lambda: False, fault.delay_s)
        if self.finished():
            return "the run finished first"
        return None

    def inject(self, fault: Fault) -> tuple[float | None, str]:
        """Do it; (when, a note), or (None, why not)."""
        kind = fault.kind
        if kind in (Kind.SIGKILL_RANK, Kind.SIGTERM_RANK, Kind.RESTART_SIGNAL_RANK):
            number = {
                Kind.SIGKILL_RANK: signal.SIGKILL,
                Kind.SIGTERM_RANK: signal.SIGTERM,
                Kind.RESTART_SIGNAL_RANK: signal.SIGUSR2,
            }[kind]
            pids = [p.pid for p in processes(self.root) if p.task and p.rank == fault.rank]
            at = time.time()
            if not kill(pids, number):
                return None, f"no task of rank {fault.rank} running"
            return at, ""
        if kind is Kind.SIGKILL_MID_CHECKPOINT:
            return self.kill_mid_checkpoint()
        if kind is Kind.REQUEUE:
            return self.requeue()
        if kind in (Kind.STOP, Kind.CANCEL):
            jobs = self.jobs()
            target = jobs[-1] if fault.by_job and jobs else self.run_id
            at = time.time()
            done = self.command("slurm-stop" if kind is Kind.STOP else "slurm-cancel", target)
            if done.returncode != 0:
                return at, f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
            return at, ""
        if kind is Kind.CONCURRENT_RELAUNCH:
            batch = self.relaunch(fault.count, after_finish=False)
            return batch.t, f"{len(batch.accepted)} accepted"
        if kind is Kind.RELAUNCH_FINISHED:
            batch = self.relaunch(fault.count, after_finish=True)
            if batch.accepted:  # let the accepted jobs run on: the samples must see them
                self.advance(lambda: False, 20)
            return batch.t, f"{len(batch.accepted)} accepted"
        if kind is Kind.TRACKING_DOWN:
            return self.tracking_down(fault.down_s)
        if kind in (Kind.SLURMCTLD_RESTART, Kind.SLURMD_RESTART):
            return self.daemon_restart(fault)
        if kind is Kind.NODE_KILL:
            return self.node_kill(fault)
        return None, "not implemented"

    def kill_mid_checkpoint(self) -> tuple[float | None, str]:
        """SIGKILL to rank 0 the instant its next checkpoint's temporary file appears."""
        folder = self.run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        watch = Inotify(folder)
        try:
            give_up = time.time() + 30
            rank0: list[int] = []
            refreshed = 0.0
            while time.time() < give_up and not self.finished():
                if time.time() - refreshed > 0.3:
                    rank0 = [p.pid for p in processes(self.root) if p.task and p.rank == 0]
                    refreshed = time.time()
                names = [n for n in watch.names(0.1) if TEMP_CHECKPOINT.fullmatch(n)]
                if names and rank0:
                    at = time.time()
                    kill(rank0, signal.SIGKILL)
                    torn = (folder / names[0]).exists()
                    return at, "mid-write" if torn else "the write had ended"
        finally:
            watch.close()
        return None, "no checkpoint written within 30 s"

    def requeue(self) -> tuple[float | None, str]:
        jobs = self.jobs()
        if not jobs:
            return None, "no job"
        if self.config.executor == "local":
            state = self.local_job(jobs[-1]) or {}
            pid = state.get("supervisor_pid")
            at = time.time()
            if not isinstance(pid, int) or not kill([pid], signal.SIGTERM):
                return None, "no supervisor"
            return at, "SIGTERM to the supervisor"
        at = time.time()
        done = self.command("scontrol", "requeue", jobs[-1], timeout=30)
        return at, "" if done.returncode == 0 else done.stderr.strip()[-200:]

    def tracking_down(self, seconds: float) -> tuple[float | None, str]:
        server = self.services.mlflow
        if server is None:
            return None, "no tracking server"
        at = time.time()
        server.down()
        time.sleep(seconds)  # no relaunch can be accepted meanwhile: the user waits too
        began = time.time()
        server.up()
        return at, f"back up in {time.time() - began:.0f} s"

    def daemon_restart(self, fault: Fault) -> tuple[float | None, str]:
        if fault.kind is Kind.SLURMCTLD_RESTART:
            daemon = "slurmctld"
        else:
            daemon = "slurmd" if self.config.nodes == 1 else f"slurmd-node{fault.node}"
        pid = self.services.daemon_pid(daemon)
        at = time.time()
        if pid is None or not kill([pid], signal.SIGKILL):
            return None, f"{daemon} not running"
        time.sleep(fault.down_s)  # no recovery while a daemon is down: the user waits too
        self.services.cluster_up()
        return at, ""

    def node_kill(self, fault: Fault) -> tuple[float | None, str]:
        jobs = self.jobs()
        if self.config.executor == "local":
            state = self.local_job(jobs[-1]) if jobs else None
            pid = state.get("supervisor_pid") if state else None
            if not isinstance(pid, int) or not _alive(pid):
                return None, "no supervisor"
            at = time.time()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            return at, "the supervisor's process group SIGKILLed"
        node = f"node{fault.node}"
        at = time.time()
        done = self.services.local_slurm("kill-node", node)
        if done.returncode != 0:
            return None, f"kill-node failed: {done.stderr.strip()[-200:]}"
        # Slurm notices after SlurmdTimeout and requeues the job; then the node comes back.
        latest = jobs[-1] if jobs else ""
        self.advance(lambda: (self.queue([latest]) or {}).get(latest) != "RUNNING", 90)
        self.services.cluster_up()
        return at, ""

    # ---- the end -------------------------------------------------------------------------------

    def view(self) -> StateView:
        # As a user looks: slurm-status first (it also ends a local job whose supervisor died),
        # then the files and MLflow.
        row: dict[str, Any] = {}
        started = time.time()
        try:
            shown = self.command("slurm-status", "--json", self.run_id, timeout=60)
        except subprocess.TimeoutExpired:
            self.say("slurm-status --json did not answer within 60 s")
            shown = subprocess.CompletedProcess([], 124, "", "")
        if shown.returncode != 0:
            last = (shown.stderr.strip().splitlines() or [""])[-1]
            self.say(f"slurm-status --json failed ({shown.returncode}, "
                     f"{time.time() - started:.1f} s): {last}")  # fmt: skip
        with contextlib.suppress(ValueError):
            rows = json.loads(shown.stdout) if shown.returncode == 0 else []
            row = next((r for r in rows if r.get("run_id") == self.run_id), {})
        status_json: str | None = None
        with contextlib.suppress(OSError, ValueError):
            status_json = json.loads((self.log_dir / "status.json").read_text()).get("status")
        return StateView(
            t=time.time(),
            mlflow=self.mlflow_status(),
            status_json=status_json,
            status_state=row.get("state"),
            status_run_state=row.get("run_state"),
            job_state=self.job_state(),
            finished_marker=(self.run_dir / "finished").exists(),
            live_jobs=self.sample().live_jobs,
        )

    def job_state(self) -> str | None:
        jobs = self.jobs()
        if not jobs:
            return None
        if self.config.executor == "local":
            state = self.local_job(jobs[-1])
            return str(state["elements"][0]["state"]) if state else None
        done = self.command("sacct", "-X", "-P", "-n", "-o", "JobID,State", "-j", jobs[-1])
        for line in done.stdout.splitlines():
            job, _, state = line.partition("|")
            if job == jobs[-1]:
                return state.split(" ", 1)[0]
        return None

    def spans(self) -> list[JobSpan]:
        jobs = self.jobs()
        found: list[JobSpan] = []
        if self.config.executor == "local":
            for job_id in jobs:
                state = self.local_job(job_id)
                if state is None:
                    continue
                element = state["elements"][0]
                ended: float | None = element.get("ended")
                if element["state"] in ("PENDING", "RUNNING", "REQUEUED"):
                    # Not final: still running, or its supervisor was killed (then it ran until
                    # it was last seen live).
                    seen = [s.t for s in self.shared.samples if job_id in s.live_jobs]
                    supervised = _alive(state.get("supervisor_pid"))
                    ended = (
                        None if supervised else (max(seen) if seen else float(state["submitted"]))
                    )
                found.append(JobSpan(job_id=job_id, start=float(state["submitted"]), end=ended))
            return found
        if not jobs:
            return []
        done = self.command(
            "sacct", "-D", "-X", "-P", "-n", "-o", "JobID,Submit,End,State", "-j", ",".join(jobs)
        )
        return sacct_spans(done.stdout, jobs)

    def attempts(self) -> list[AttemptView]:
        views: list[AttemptView] = []
        for folder in sorted(self.log_dir.glob("attempt-*")):
            number = folder.name.removeprefix("attempt-")
            if not number.isdigit():
                continue
            started: float | None = None
            with contextlib.suppress(OSError, ValueError):
                started = float(json.loads((folder / "attempt.json").read_text())["started_at"])
            out = _read(folder / "rank-0.out")
            resumed = RESUMED.search(out)
            first = PROGRESS.search(out)
            errors = [
                line.strip()[:300]
                for path in sorted(folder.glob("rank-*.err"))
                for line in _read(path).splitlines()
                if LOAD_ERROR.search(line)
            ]
            views.append(
                AttemptView(
                    number=int(number),
                    started_at=started,
                    resumed_from=int(resumed.group(1)) if resumed else None,
                    first_step=int(first.group(1)) if first else None,
                    load_errors=tuple(errors),
                )
            )
        return sorted(views, key=lambda v: v.number)

    def checkpoints(self) -> list[CheckpointView]:
        from blocktrain.train.checkpoint import files

        found: list[CheckpointView] = []
        for path in sorted((self.run_dir / "checkpoints").glob("step-*.pt")):
            step = int(path.stem.removeprefix("step-"))
            with contextlib.suppress(OSError):
                found.append(
                    CheckpointView(step=step, good=files.is_good(path), mtime=path.stat().st_mtime)
                )
        return found

    def metrics(self) -> dict[str, list[tuple[int, float]]]:
        try:
            with contextlib.closing(
                sqlite3.connect(self.services.store(self.root), timeout=10)
            ) as db:
                rows = db.execute(
                    "select key, step, value from metrics where run_uuid=? order by timestamp, step",
                    (self.run_id,),
                ).fetchall()
        except sqlite3.Error:
            return {}
        points: dict[str, list[tuple[int, float]]] = {}
        for key, step, value in rows:
            if invariants.compared(str(key)):
                points.setdefault(str(key), []).append((int(step), float(value)))
        return points

    def leftovers(self) -> Leftovers:
        """What is left once the run finished, after :data:`LEFTOVER_GRACE_S` to go."""
        jobs = self.jobs()
        watchers = self.watchers()

        def left() -> tuple[list[Proc], dict[str, str], list[str]]:
            procs = processes(self.root, [*jobs, *watchers])
            queued = self.queue([*jobs, *watchers]) or {}
            return procs, queued, self.allocations()

        give_up = time.time() + LEFTOVER_GRACE_S
        procs, queued, busy = left()
        while (procs or queued or busy) and time.time() < give_up:
            time.sleep(1)
            procs, queued, busy = left()
        return Leftovers(
            processes=tuple(f"pid {p.pid} (job {p.job}): {' '.join(p.argv)[:200]}" for p in procs),
            jobs=tuple(f"{job} {state}" for job, state in sorted(queued.items())),
            allocations=tuple(busy),
        )

    def allocations(self) -> list[str]:
        """Nodes still allocated to a job (Slurm only; a local job holds none)."""
        if self.config.executor != "slurm":
            return []
        done = self.command("sinfo", "-h", "-N", "-o", "%N %T", timeout=30)
        return [
            line.strip()
            for line in done.stdout.splitlines()
            if line.split()[1:2] and line.split()[1].rstrip("*~#!%$@^-") != "idle"
        ]

    def weights(self) -> dict[str, str] | None:
        return weights_digest(self.run_dir / "final.pt")

    def clean_up(self) -> None:
        """End whatever the episode left, so that the next one starts alone."""
        jobs = [*self.jobs(), *self.watchers()]
        if self.config.executor == "slurm" and jobs:
            self.command("scancel", *jobs, timeout=30)
        for state_file in (self.root / ".blocktrain" / "local-jobs").glob("L*.json"):
            with contextlib.suppress(Exception):
                state = json.loads(state_file.read_text())
                pid = state.get("supervisor_pid")
                if isinstance(pid, int) and _alive(pid):
                    kill([pid], signal.SIGKILL)
        kill([p.pid for p in processes(self.root, jobs)], signal.SIGKILL)

    def observe(self, finished: bool) -> Observed:
        leftovers = self.leftovers() if finished else Leftovers()  # waits for the job to go
        self.views.append(self.view())
        self.say(f"observed: finished {finished}, final view {self.views[-1]}, {leftovers}")
        self.stop_sampling()
        return Observed(
            run_id=self.run_id,
            t0=self.t0,
            finished=finished,
            samples=tuple(self.shared.samples),
            spans=tuple(self.spans()),
            relaunches=tuple(self.relaunches),
            views=tuple(self.views),
            attempts=tuple(self.attempts()),
            checkpoints=tuple(self.checkpoints()),
            weights=self.weights() if finished else None,
            metrics=self.metrics(),
            leftovers=leftovers,
            faults=tuple(self.records),
        )

    def run(self) -> Observed:
        """The whole episode: launch, faults, recovery to the end, observations."""
        try:
            self.launch()
            self.start_sampling()
            try:
                self.run_faults()
                done = self.advance(self.finished, max(0.0, self.deadline - time.time()))
                self.say("finished" if done else "not finished by the deadline")
            except _GiveUpError as exc:
                self.say(f"gave up: {exc}")
                done = False
            return self.observe(done and self.finished())
        finally:
            self.stop_sampling()
            self.clean_up()


class _GiveUpError(Exception):
    """The episode cannot go on (a run that is never accepted again): observe what there is."""


def sacct_spans(text: str, jobs: Sequence[str]) -> list[JobSpan]:
    """The spans of ``jobs`` from ``sacct -D -X -P -n -o JobID,Submit,End,State``: one line per
    instance of a job, a requeued job's earlier instances ending REQUEUED. A job was live from
    its first submission to the end of its latest instance (None: that one still runs)."""
    instances: dict[str, list[tuple[float, str, float | None]]] = {}
    for line in text.splitlines():
        job, submit, end, state = [*line.split("|"), "", "", ""][:4]
        if job in jobs:
            submitted = _epoch(submit) or 0.0
            instances.setdefault(job, []).append((submitted, state.split(" ")[0], _epoch(end)))
    spans: list[JobSpan] = []
    for job, seen in instances.items():
        _, state, end = max(seen, key=lambda instance: instance[0])
        live = state in SLURM_LIVE_STATES
        start = min(instance[0] for instance in seen)
        spans.append(JobSpan(job_id=job, start=start, end=None if live else end))
    return spans


def _alive(pid: object) -> bool:
    return isinstance(pid, int) and alive(pid)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _epoch(stamp: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").timestamp()  # sacct's local time
    except ValueError:
        return None


def weights_digest(path: Path) -> dict[str, str] | None:
    """Tensor name -> sha256 of its dtype, shape and bytes, of a saved state dict."""
    if not path.is_file():
        return None
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    digests: dict[str, str] = {}
    for name, tensor in state.items():
        data = tensor.detach().contiguous().cpu()
        digest = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
        digest.update(data.numpy().tobytes())
        digests[str(name)] = digest.hexdigest()
    return digests


# --- a campaign ------------------------------------------------------------------------------


def run_episode(services: Services, plan: EpisodePlan, folder: Path) -> EpisodeResult:
    began = time.time()
    try:
        observed = Episode(services, plan, folder).run()
    except Exception as exc:  # noqa: BLE001 - a harness failure is reported, not raised
        return EpisodeResult(
            plan=plan, observed=None, error=f"{type(exc).__name__}: {exc}",
            seconds=time.time() - began, kept=str(folder), baseline=not plan.faults,
        )  # fmt: skip
    return EpisodeResult(
        plan=plan, observed=observed, seconds=time.time() - began, kept=str(folder),
        baseline=not plan.faults,
    )  # fmt: skip


def run_campaign(
    config: Config,
    seed: int,
    episodes: Sequence[int],
    workdir: Path,
    *,
    progress: Callable[[str], None] = lambda _: None,
    keep_all: bool = False,
    kinds: Sequence[Kind] | None = None,
) -> tuple[list[EpisodeResult], str]:
    """A baseline run and the ``episodes`` of the campaign ``seed``: results and the report."""
    began = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    services = Services(config, workdir)
    results: list[EpisodeResult] = []
    try:
        services.start()
        progress(f"services up in {time.time() - began:.0f} s ({config.label})")
        base_plan = EpisodePlan(seed=seed, index=-1, config=config, faults=())
        baseline = _checked(run_episode(services, base_plan, workdir / "baseline"), None, keep_all)
        results.append(baseline)
        reference = _reference(baseline)
        progress(_line(baseline) + ("" if reference else "; no reference: bit-identity unchecked"))
        for index in episodes:
            plan = plan_episode(seed, index, config, kinds)
            result = run_episode(services, plan, workdir / f"episode-{index:04d}")
            result = _checked(result, reference, keep_all)
            results.append(result)
            progress(_line(result))
    finally:
        services.stop()
    return results, render(results, config, seed, time.time() - began)


def _reference(baseline: EpisodeResult) -> Reference | None:
    observed = baseline.observed
    if observed is None or not observed.finished or observed.weights is None:
        return None
    return Reference(weights=observed.weights, metrics=observed.metrics)


def _checked(result: EpisodeResult, reference: Reference | None, keep_all: bool) -> EpisodeResult:
    if result.observed is None:
        return result
    violations = invariants.check(result.observed, reference)
    kept = result.kept if violations or keep_all else None
    return EpisodeResult(
        plan=result.plan, observed=result.observed, violations=tuple(violations),
        error=result.error, seconds=result.seconds, kept=kept, baseline=result.baseline,
    )  # fmt: skip


def _line(result: EpisodeResult) -> str:
    name = "baseline" if result.baseline else result.plan.name
    faults = ", ".join(f.describe() for f in result.plan.faults) or "no faults"
    if result.error is not None:
        return f"{name}: harness error after {result.seconds:.0f} s: {result.error}"
    return f"{name}: {faults}; {result.seconds:.0f} s, {len(result.violations)} violation(s)"


@contextlib.contextmanager
def workdir_for(path: Path | None) -> Iterator[Path]:
    """``path``, or a new folder under /tmp that is kept (it holds the episodes found out)."""
    if path is not None:
        yield path
        return
    import tempfile

    yield Path(tempfile.mkdtemp(prefix="blocktrain-chaos-"))


def remove_clean_episodes(results: Sequence[EpisodeResult], workdir: Path) -> None:
    """Delete the folders of the episodes that found nothing (their projects, logs)."""
    kept = {r.kept for r in results if r.kept}
    for folder in [*workdir.glob("episode-*"), workdir / "baseline"]:
        if str(folder) not in kept:
            shutil.rmtree(folder, ignore_errors=True)
