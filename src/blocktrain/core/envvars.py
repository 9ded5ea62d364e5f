"""Every ``BLOCKTRAIN_*`` environment variable the library reads or sets, each declared once.

A :class:`Var` holds a variable's name, type, default and meaning, and who sets it: ``user``
for the ones you (a profile, ``.envrc``, a shell) may set, ``blocktrain`` for the ones the
launcher sets in its tasks to hand them the run. Code names a variable through its constant
here (``envvars.RUN_ID.name``), never through a string literal, and ``docs/configuration.md``
documents the same table: ``tests/unit/test_envvars.py`` holds all three together.

Declarations only: nothing here reads the environment (values are read where they are used,
when a call starts). Imports nothing but the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

PREFIX = "BLOCKTRAIN_"

SetBy = Literal["user", "blocktrain"]


@dataclass(frozen=True, slots=True)
class Var:
    """One environment variable: ``default`` and ``meaning`` are the text the docs show."""

    name: str
    type: str
    """``str``, ``int``, ``bool``, ``seconds`` (a number), ``path``, ``url``, ``json`` or
    ``names`` (comma-separated variable names)."""
    default: str
    """What applies when the variable is unset; empty when nothing does."""
    meaning: str
    set_by: SetBy = "user"

    def get(self, env: Mapping[str, str]) -> str | None:
        """The value in ``env``; None when unset or empty."""
        return env.get(self.name) or None


# Tracking (blocktrain.track)
RUN_ID = Var(
    "BLOCKTRAIN_RUN_ID", "str", "", "the MLflow run to resume (slurm-launch sets it in its tasks)"
)
RUN_NAME = Var(
    "BLOCKTRAIN_RUN_NAME",
    "str",
    "MLflow's generated name",
    "name of new runs (slurm-launch sets it to the run's name)",
)
LOG_DIR = Var(
    "BLOCKTRAIN_LOG_DIR",
    "path",
    "<project>/.blocktrain/logs",
    "captured logs and unsent records (slurm-launch sets it in its tasks)",
)
LOG_UPLOAD_SECONDS = Var("BLOCKTRAIN_LOG_UPLOAD_SECONDS", "seconds", "30", "log upload interval")
MLFLOW_START_SECONDS = Var(
    "BLOCKTRAIN_MLFLOW_START_SECONDS",
    "seconds",
    "10",
    "how long a start waits for the run to be created",
)
MLFLOW_FLUSH_SECONDS = Var(
    "BLOCKTRAIN_MLFLOW_FLUSH_SECONDS",
    "seconds",
    "30",
    "how long the end waits for the tracking server",
)
SYSTEM_METRICS_INTERVAL_S = Var(
    "BLOCKTRAIN_SYSTEM_METRICS_INTERVAL_S",
    "seconds",
    "10",
    "seconds between system metric samples; 0: none",
)
# Notifications (blocktrain.notify)
SLACK_WEBHOOK_URL = Var(
    "BLOCKTRAIN_SLACK_WEBHOOK_URL",
    "url",
    "$SLACK_WEBHOOK_URL",
    "the Slack webhook messages go to; without either variable, nothing is sent",
)
SLACK_MENTION = Var(
    "BLOCKTRAIN_SLACK_MENTION",
    "str",
    "",
    "prepended to end, crash and kill messages, e.g. <@U0123ABC>",
)
SLACK_TIMEOUT_SECONDS = Var(
    "BLOCKTRAIN_SLACK_TIMEOUT_SECONDS", "seconds", "3", "per webhook request"
)
# Secrets (blocktrain.core.redact, blocktrain.secrets)
SECRET_NAMES = Var(
    "BLOCKTRAIN_SECRET_NAMES",
    "names",
    "",
    "more variables whose values are masked (blocktrain secrets env sets it)",
)
# Data (blocktrain.data)
DATA_DEV = Var(
    "BLOCKTRAIN_DATA_DEV", "bool", "off", "1, true, yes or on: use -tiny dataset variants"
)
DATA_VERIFY = Var(
    "BLOCKTRAIN_DATA_VERIFY", "str", "stat", "stat or full: full re-hashes cached files"
)
S3_ATTEMPTS = Var("BLOCKTRAIN_S3_ATTEMPTS", "int", "6", "tries per S3 request")
S3_CONCURRENCY = Var("BLOCKTRAIN_S3_CONCURRENCY", "int", "16", "parallel S3 transfers")
# Training (blocktrain.train)
CHECKPOINT_DIR = Var(
    "BLOCKTRAIN_CHECKPOINT_DIR",
    "path",
    "<project>/.blocktrain/runs/<run id>/checkpoints in a tracked call, else ./checkpoints",
    "where blocktrain.train.default_folder() keeps a run's checkpoints "
    "(slurm-launch sets it in its tasks)",
)
# Jobs (blocktrain.core.jobenv, blocktrain.distributed)
ATTEMPT = Var(
    "BLOCKTRAIN_ATTEMPT",
    "int",
    "BLOCKTRAIN_ATTEMPT_BASE + SLURM_RESTART_COUNT + 1",
    "the attempt number, when set",
)
MASTER_PORT = Var(
    "BLOCKTRAIN_MASTER_PORT",
    "int",
    "15000 + job id % 20000",
    "rank 0's rendezvous port when MASTER_PORT is unset",
)
# Set by blocktrain in the tasks of a launched job (blocktrain.restart.jobspec, launch.local)
RUN_DIR = Var(
    "BLOCKTRAIN_RUN_DIR",
    "path",
    "",
    "the run's folder, <project>/.blocktrain/runs/<run id>",
    "blocktrain",
)
REQUEUE_DIR = Var(
    "BLOCKTRAIN_REQUEUE_DIR",
    "path",
    "",
    "where a task leaves the requeue marker that the batch script turns into scontrol requeue",
    "blocktrain",
)
ATTEMPT_BASE = Var(
    "BLOCKTRAIN_ATTEMPT_BASE",
    "int",
    "0",
    "the attempts a relaunched run already had",
    "blocktrain",
)
RESTART_SIGNAL = Var(
    "BLOCKTRAIN_RESTART_SIGNAL",
    "str",
    "USR2",
    "the signal that asks the job to checkpoint and requeue (the profile's signal)",
    "blocktrain",
)
RESTART_LEAD_S = Var(
    "BLOCKTRAIN_RESTART_LEAD_S",
    "seconds",
    "120",
    "how long before the time limit the signal comes (the profile's signal_lead_s)",
    "blocktrain",
)
RESTART_BUDGETS = Var(
    "BLOCKTRAIN_RESTART_BUDGETS",
    "json",
    "{}",
    "the requeues each cause (timeout, preemption, crash) may spend, from the profile's "
    "restarts; a cause not named has no bound",
    "blocktrain",
)
TIME_LIMIT_S = Var(
    "BLOCKTRAIN_TIME_LIMIT_S",
    "seconds",
    "",
    "the job's time limit; unset: none (a signal then counts as a preemption)",
    "blocktrain",
)
EXECUTOR = Var(
    "BLOCKTRAIN_EXECUTOR",
    "str",
    "",
    "local in the tasks of the local executor; unset under Slurm",
    "blocktrain",
)

ALL: tuple[Var, ...] = (
    RUN_ID, RUN_NAME, LOG_DIR, LOG_UPLOAD_SECONDS, MLFLOW_START_SECONDS, MLFLOW_FLUSH_SECONDS,
    SYSTEM_METRICS_INTERVAL_S, SLACK_WEBHOOK_URL, SLACK_MENTION, SLACK_TIMEOUT_SECONDS,
    SECRET_NAMES, DATA_DEV, DATA_VERIFY, S3_ATTEMPTS, S3_CONCURRENCY, CHECKPOINT_DIR, ATTEMPT,
    MASTER_PORT, RUN_DIR, REQUEUE_DIR, ATTEMPT_BASE, RESTART_SIGNAL, RESTART_LEAD_S,
    RESTART_BUDGETS, TIME_LIMIT_S, EXECUTOR,
)  # fmt: skip
"""Every variable, in the order of ``docs/configuration.md``."""
