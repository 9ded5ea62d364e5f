"""What an episode does: the fault kinds, where each applies, and a schedule drawn from a seed.

Pure: the same (seed, episode, configuration) gives the same plan on any machine and Python
(``random.Random`` seeded with a string), so that an episode that found a violation can be run
again alone (``--seed S --only N``).
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """A fault; its value is how the report names it."""

    SIGKILL_RANK = "sigkill-rank"
    SIGTERM_RANK = "sigterm-rank"
    RESTART_SIGNAL_RANK = "restart-signal-rank"
    SIGKILL_MID_CHECKPOINT = "sigkill-mid-checkpoint"
    REQUEUE = "requeue"
    STOP = "slurm-stop"
    CANCEL = "slurm-cancel"
    CONCURRENT_RELAUNCH = "concurrent-relaunch"
    RELAUNCH_FINISHED = "relaunch-finished"
    SLURMCTLD_RESTART = "slurmctld-restart"
    SLURMD_RESTART = "slurmd-restart"
    NODE_KILL = "node-kill"
    TRACKING_DOWN = "tracking-down"


DESCRIPTIONS: dict[Kind, str] = {
    Kind.SIGKILL_RANK: "SIGKILL to a random rank, at a random instant (start-up included)",
    Kind.SIGTERM_RANK: "SIGTERM to a random rank, at a random instant (start-up included)",
    Kind.RESTART_SIGNAL_RANK: "the profile's restart signal (USR2) to a random rank",
    Kind.SIGKILL_MID_CHECKPOINT: "SIGKILL to rank 0 while it writes a checkpoint",
    Kind.REQUEUE: "scontrol requeue; a local job: SIGTERM to its supervisor (a preemption)",
    Kind.STOP: "slurm-stop by run id or job id; later recovered with slurm-launch --run-id",
    Kind.CANCEL: "slurm-cancel by run id or job id; later recovered with slurm-launch --run-id",
    Kind.CONCURRENT_RELAUNCH: "2-4 slurm-launch --run-id at the same instant while a job runs",
    Kind.RELAUNCH_FINISHED: "2-4 slurm-launch --run-id at the same instant after the run finished",
    Kind.SLURMCTLD_RESTART: "slurmctld killed (SIGKILL), started again seconds later",
    Kind.SLURMD_RESTART: "slurmd of a node killed (SIGKILL), started again seconds later",
    Kind.NODE_KILL: "scripts/local-slurm kill-node; a local job: its supervisor's process "
    "group SIGKILLed (the machine lost)",
    Kind.TRACKING_DOWN: "the MLflow tracking server stopped for seconds, then started again",
}

SIGNAL_KINDS = frozenset({Kind.SIGKILL_RANK, Kind.SIGTERM_RANK, Kind.RESTART_SIGNAL_RANK})


class Anchor(StrEnum):
    """The instant a fault's delay counts from."""

    TRAINING = "training"
    """The run trains again since the previous fault (new progress lines of rank 0)."""
    STARTUP = "startup"
    """An attempt's tasks exist and have not trained yet (imports, process group, resume)."""
    CHECKPOINT = "checkpoint"
    """The next checkpoint write begins (its temporary file appears); no delay."""
    FINISHED = "finished"
    """The run has finished."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """Where an episode's job runs."""

    executor: str = "local"
    """``local`` (``--executor local``, no Slurm) or ``slurm`` (the local cluster)."""
    nodes: int = 1
    """Slurm nodes of the job (1 or 2); a local job has one machine."""
    steps: int = 240
    """Steps of the job (``JOB_ARGS``'s other values stay): 240 train for about 12 s."""

    def __post_init__(self) -> None:
        if self.executor not in ("local", "slurm"):
            raise ValueError(f"executor must be local or slurm, got {self.executor!r}")
        if self.nodes not in (1, 2) or (self.executor == "local" and self.nodes != 1):
            raise ValueError(f"nodes must be 1 (local) or 1..2 (slurm), got {self.nodes}")
        if self.steps < 40:
            raise ValueError(f"steps must be at least 40 (a checkpoint), got {self.steps}")

    @property
    def world(self) -> int:
        """Ranks of the job: two (on one node, or one on each of two nodes)."""
        return 2

    @property
    def tracking(self) -> str:
        """``server``: a local MLflow server (127.0.0.1); ``embedded``: the project's SQLite
        store, where the nodes of a multi-node cluster cannot reach 127.0.0.1."""
        return "embedded" if self.executor == "slurm" and self.nodes > 1 else "server"

    @property
    def label(self) -> str:
        return f"{self.executor}, {self.nodes} node{'s' if self.nodes > 1 else ''}"


JOB_ARGS: dict[str, float | int] = {"step_seconds": 0.05, "checkpoint_every": 40}
"""The arguments of restartable.py's train in every episode, with ``steps`` of the config."""


def not_applicable(kind: Kind, config: Config) -> str | None:
    """Why ``kind`` cannot happen in ``config`` (a line for the report), or None when it can."""
    if kind in (Kind.SLURMCTLD_RESTART, Kind.SLURMD_RESTART) and config.executor != "slurm":
        return "no Slurm daemons under --executor local"
    if kind is Kind.NODE_KILL and config.executor == "slurm" and config.nodes < 2:
        return "needs a job on two nodes (NODES=2)"
    if kind is Kind.TRACKING_DOWN and config.tracking != "server":
        return "the multi-node cluster tracks into the embedded store (no server to stop)"
    return None


def applicable(config: Config) -> list[Kind]:
    return [kind for kind in Kind if not_applicable(kind, config) is None]


@dataclass(frozen=True, kw_only=True, slots=True)
class Fault:
    kind: Kind
    anchor: Anchor = Anchor.TRAINING
    delay_s: float = 0.0
    """After the anchor; the instant is random within the run's training or start-up."""
    rank: int = 0
    """For the signal kinds: which rank."""
    by_job: bool = False
    """For slurm-stop and slurm-cancel: name the job id instead of the run id."""
    count: int = 1
    """For the relaunch kinds: how many ``slurm-launch --run-id`` start at the same instant."""
    down_s: float = 0.0
    """For the restarts of a daemon or the tracking server: how long it stays down."""
    node: int = 1
    """For node-kill and slurmd-restart on several nodes: which node (1-based)."""

    def describe(self) -> str:
        """One line: the kind and its parameters."""
        parts = [self.kind.value, f"{self.anchor.value}+{self.delay_s:.2f}s"]
        if self.kind in SIGNAL_KINDS:
            parts.append(f"rank {self.rank}")
        if self.kind in (Kind.STOP, Kind.CANCEL):
            parts.append("by job id" if self.by_job else "by run id")
        if self.kind in (Kind.CONCURRENT_RELAUNCH, Kind.RELAUNCH_FINISHED):
            parts.append(f"x{self.count}")
        if self.down_s:
            parts.append(f"down {self.down_s:.1f}s")
        if self.kind in (Kind.NODE_KILL, Kind.SLURMD_RESTART):
            parts.append(f"node {self.node}")
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True, slots=True)
class EpisodePlan:
    seed: int
    index: int
    config: Config
    faults: tuple[Fault, ...]
    relaunchers: tuple[int, ...] = field(default=(1,))
    """How many ``slurm-launch --run-id`` start at once at each recovery, in turn (cycled)."""
    relaunch_delay_s: float = 0.0
    """How long the user waits, once the run left the queue unfinished, before relaunching."""

    @property
    def name(self) -> str:
        return f"episode {self.index} (seed {self.seed})"

    def relaunchers_at(self, recovery: int) -> int:
        return self.relaunchers[recovery % len(self.relaunchers)]


def rng_for(seed: int, index: int, config: Config) -> random.Random:
    return random.Random(f"chaos:{seed}:{index}:{config.executor}:{config.nodes}")


def plan_episode(
    seed: int, index: int, config: Config, kinds: Collection[Kind] | None = None
) -> EpisodePlan:
    """Episode ``index`` of the campaign ``seed``: 1-3 faults of the kinds that apply (of
    ``kinds`` only, when given), in order, and the user's way of recovering (concurrent
    relaunches, a pause)."""
    rng = rng_for(seed, index, config)
    wanted = set(applicable(config) if kinds is None else kinds) & set(applicable(config))
    pool = [k for k in Kind if k in wanted and k is not Kind.RELAUNCH_FINISHED]
    count = rng.choice((1, 2, 2, 3))
    faults = [
        draw_fault(rng, rng.choice(pool), config, first=i == 0) for i in range(count if pool else 0)
    ]
    after_finish = rng.random() < 0.25 or not pool
    if Kind.RELAUNCH_FINISHED in wanted and after_finish:
        faults.append(draw_fault(rng, Kind.RELAUNCH_FINISHED, config, first=False))
    return EpisodePlan(
        seed=seed,
        index=index,
        config=config,
        faults=tuple(faults),
        relaunchers=tuple(rng.choice((1, 1, 2, 3)) for _ in range(4)),
        relaunch_delay_s=round(rng.choice((0.0, 0.0, rng.uniform(0.0, 5.0))), 2),
    )


def draw_fault(rng: random.Random, kind: Kind, config: Config, *, first: bool) -> Fault:
    """One fault of ``kind`` with random parameters. A signal may come during start-up: in the
    first attempt when it is the first fault, else in the attempt a previous fault started."""
    anchor = Anchor.TRAINING
    if kind in SIGNAL_KINDS and rng.random() < (0.4 if first else 0.2):
        anchor = Anchor.STARTUP
    elif kind is Kind.SIGKILL_MID_CHECKPOINT:
        anchor = Anchor.CHECKPOINT
    elif kind is Kind.RELAUNCH_FINISHED:
        anchor = Anchor.FINISHED
    down = 0.0
    if kind is Kind.TRACKING_DOWN:
        down = rng.uniform(1.0, 10.0)
    elif kind in (Kind.SLURMCTLD_RESTART, Kind.SLURMD_RESTART):
        down = rng.uniform(1.0, 15.0)
    return Fault(
        kind=kind,
        anchor=anchor,
        delay_s=0.0
        if anchor in (Anchor.CHECKPOINT, Anchor.FINISHED)
        else round(rng.uniform(0, 3), 2),
        rank=rng.randrange(config.world) if kind in SIGNAL_KINDS else 0,
        by_job=kind in (Kind.STOP, Kind.CANCEL) and rng.random() < 0.5,
        count=rng.randint(2, 4)
        if kind in (Kind.CONCURRENT_RELAUNCH, Kind.RELAUNCH_FINISHED)
        else 1,
        down_s=round(down, 1),
        node=rng.randint(1, config.nodes) if config.executor == "slurm" else 1,
    )
