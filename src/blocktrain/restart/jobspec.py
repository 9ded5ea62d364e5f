"""What one task needs to run one run's attempt: a plain, picklable description."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

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
            "BLOCKTRAIN_RUN_ID": self.run_id,
            "BLOCKTRAIN_RUN_DIR": self.run_dir,
            "BLOCKTRAIN_LOG_DIR": self.log_dir,
            "BLOCKTRAIN_CHECKPOINT_DIR": str(RunFiles(Path(self.run_dir)).checkpoints),
            "BLOCKTRAIN_REQUEUE_DIR": self.requeue_dir,
            "BLOCKTRAIN_ATTEMPT_BASE": str(self.attempt_base),
            "BLOCKTRAIN_RESTART_SIGNAL": self.restart_signal,
            "BLOCKTRAIN_RESTART_LEAD_S": str(self.lead_s),
            "BLOCKTRAIN_RESTART_BUDGETS": json.dumps(self.budgets),
        }
        if self.time_limit_s is not None:
            env["BLOCKTRAIN_TIME_LIMIT_S"] = str(self.time_limit_s)
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        if self.experiment:
            env["MLFLOW_EXPERIMENT_NAME"] = self.experiment
        if self.run_name:
            env["BLOCKTRAIN_RUN_NAME"] = self.run_name  # shown in the Slack messages
        return env
