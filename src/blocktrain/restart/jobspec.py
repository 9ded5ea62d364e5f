"""What one task needs to run one run's attempt: a plain, picklable description."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from blocktrain.core import envvars
from blocktrain.core.paths import RunFiles
from blocktrain.core.values import JSON


@dataclass(frozen=True, kw_only=True, slots=True)
class JobSpec:
    run_id: str
    entry: str
    """``module:function``."""
    args: dict[str, JSON]
    code_dir: str
    run_dir: str
    log_dir: str
    requeue_dir: str
    attempt_base: int = 0
    restart_signal: str = "USR2"
    lead_s: int = 120
    time_limit_s: int | None = None
    budgets: dict[str, int | str] = field(default_factory=dict[str, int | str])
    tracking_uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None

    def environment(self) -> dict[str, str]:
        """The variables the task runs with: the tracker, the restart protocol, the checkpoints."""
        env = {
            envvars.RUN_ID.name: self.run_id,
            envvars.RUN_DIR.name: self.run_dir,
            envvars.LOG_DIR.name: self.log_dir,
            envvars.CHECKPOINT_DIR.name: str(RunFiles(Path(self.run_dir)).checkpoints),
            envvars.REQUEUE_DIR.name: self.requeue_dir,
            envvars.ATTEMPT_BASE.name: str(self.attempt_base),
            envvars.RESTART_SIGNAL.name: self.restart_signal,
            envvars.RESTART_LEAD_S.name: str(self.lead_s),
            envvars.RESTART_BUDGETS.name: json.dumps(self.budgets),
        }
        if self.time_limit_s is not None:
            env[envvars.TIME_LIMIT_S.name] = str(self.time_limit_s)
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        if self.experiment:
            env["MLFLOW_EXPERIMENT_NAME"] = self.experiment
        if self.run_name:
            env[envvars.RUN_NAME.name] = self.run_name  # shown in the Slack messages
        return env
