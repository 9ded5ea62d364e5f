"""Sending MLflow records kept on disk during an outage: at a run's start, or by command.

``python -m blocktrain.track replay [FILE ...]`` sends the given spill files, else every one in
the project's ``unsent`` folder (:func:`blocktrain.core.paths.unsent_dir`). A tracked run sends
them too when it starts (:func:`replay_unsent`), and leaves any it cannot send for later.

Must not: let a spill file that cannot be sent yet stop a job from starting.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from blocktrain.core.paths import unsent_dir
from blocktrain.track.backend import EMBEDDED_ARTIFACTS, MlflowBackend
from blocktrain.track.tracker import TrackConfig
from blocktrain.track.writer import replay

_log = logging.getLogger("blocktrain.track")


def backend_for(config: TrackConfig) -> MlflowBackend:
    """The MLflow client of ``config``; the embedded store keeps artifacts in the project."""
    artifact_root = config.root / EMBEDDED_ARTIFACTS if config.embedded else None
    return MlflowBackend(config.tracking_uri, artifact_root)


def replay_unsent(backend: MlflowBackend, log_dir: Path) -> None:
    """Send what earlier runs kept on disk; a file that still fails waits for the next start."""
    folder = unsent_dir(log_dir)
    for spill in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        try:
            sent = replay(backend, spill)
        except Exception as exc:  # noqa: BLE001 - left for the next start; the job goes on
            _log.warning("could not send buffered MLflow records in %s yet: %s", spill, exc)
        else:
            _log.warning("sent %d buffered MLflow records from %s", sent, spill)


def replay_main(argv: list[str]) -> int:
    """``python -m blocktrain.track replay [FILE ...]``: send records kept during an outage."""
    if not argv or argv[0] != "replay":
        print("usage: python -m blocktrain.track replay [SPILL.jsonl ...]")  # noqa: T201
        return 2
    config = TrackConfig.from_environ(os.environ, Path.cwd())
    files = [Path(a) for a in argv[1:]] or sorted(unsent_dir(config.log_dir).glob("*.jsonl"))
    backend = backend_for(config)
    for file in files:
        print(f"{file}: sent {replay(backend, file)} records")  # noqa: T201
    return 0
