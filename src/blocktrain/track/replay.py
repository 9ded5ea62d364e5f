"""Sending MLflow records kept on disk during an outage: at a run's start, or by command.

``python -m blocktrain.track replay [FILE ...]`` sends the given spill files, else every one in
the project's ``unsent`` folder (:func:`blocktrain.core.paths.unsent_dir`). A tracked run sends
them too when it starts (:func:`replay_unsent`), and leaves any it cannot send for later; so
does the finalizer, for the runs whose jobs have ended.

A spill file holds what one attempt could not send (:func:`spill_path`), often its final
status. It may be sent long after a later attempt of the same run took over; its status and
attempt number are then out of date and left out (:func:`for_replay`), the rest is sent.
Metric points whose step the run holds already are left out too (:func:`unsent_points`): a
replay cut short and run again, a request that reached the server after its attempt gave up
on it, or a later attempt that went on from a checkpoint would otherwise log them twice.

Must not: let a spill file that cannot be sent yet stop a job from starting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from blocktrain.core.atomic import locked
from blocktrain.core.paths import unsent_dir
from blocktrain.track.backend import ATTEMPT_TAG, EMBEDDED_ARTIFACTS, MlflowBackend
from blocktrain.track.repeats import MetricItem, drop_held, keys_to_read, lowest_steps
from blocktrain.track.tracker import TrackConfig
from blocktrain.track.writer import Op, replay

_log = logging.getLogger("blocktrain.track")
_SPILL_NAME = re.compile(r"(?P<key>.+)-attempt-(?P<attempt>\d+)\.jsonl")


def backend_for(config: TrackConfig) -> MlflowBackend:
    """The MLflow client of ``config``; the embedded store keeps artifacts in the project."""
    artifact_root = config.root / EMBEDDED_ARTIFACTS if config.embedded else None
    return MlflowBackend(config.tracking_uri, artifact_root)


def spill_path(log_dir: Path, key: str, attempt: int) -> Path:
    """Where attempt ``attempt`` of the run ``key`` keeps what it could not send."""
    return unsent_dir(log_dir) / f"{key}-attempt-{attempt}.jsonl"


def spill_attempt(path: Path) -> int | None:
    """The attempt whose records ``path`` holds, from its name; None for another name."""
    found = _SPILL_NAME.fullmatch(path.name)
    return int(found["attempt"]) if found else None


def spill_files(log_dir: Path, run_id: str | None = None) -> list[Path]:
    """The spill files of ``run_id`` (default: of every run), each run's in attempt order."""
    folder = unsent_dir(log_dir)
    if not folder.is_dir():
        return []
    pattern = f"{run_id}-attempt-*.jsonl" if run_id is not None else "*.jsonl"

    def order(path: Path) -> tuple[str, int, str]:
        found = _SPILL_NAME.fullmatch(path.name)
        return (found["key"], int(found["attempt"]), "") if found else (path.name, 0, path.name)

    return sorted(folder.glob(pattern), key=order)


def for_replay(op: Op, spill_attempt: int | None, run_attempt: int | None) -> Op | None:
    """``op`` as a replay should send it, or None to leave it out.

    ``spill_attempt`` is the attempt that kept the op, ``run_attempt`` the run's latest in
    MLflow before the replay (None where either is unknown). Once a later attempt started,
    the run's status and attempt number are that attempt's: an older attempt's status (its
    FAILED, or even its FINISHED) must not take the run back. Its metrics, params, tags and
    artifacts still belong to the run and are sent.
    """
    if spill_attempt is None or run_attempt is None or spill_attempt >= run_attempt:
        return op
    if op.kind == "status":
        return None
    if op.kind == "tags" and ATTEMPT_TAG in op.data.get("items", {}):
        items = {k: v for k, v in op.data["items"].items() if k != ATTEMPT_TAG}
        return Op("tags", {**op.data, "items": items}) if items else None
    return op


def send_spill(backend: MlflowBackend, spill: Path) -> int | None:
    """Send one spill file, older attempts' statuses left out (:func:`for_replay`); returns
    how many records went, or None when another process sent the file meanwhile.

    Two processes may replay the same folder at once (a finalizer and a start, the tasks of
    a job array); the lock keeps each record from being sent twice.
    """
    lock = spill.with_name(f".{spill.name}.lock")
    with locked(lock):
        try:
            if not spill.exists():
                return None
            statuses = _screen(backend, spill_attempt(spill))
            points = unsent_points(backend, spill)

            def screen(op: Op, run_id: str | None) -> Op | None:
                kept = statuses(op, run_id)
                return points(kept, run_id) if kept is not None else None

            return replay(backend, spill, screen)
        finally:
            with contextlib.suppress(OSError):
                lock.unlink()


def _screen(backend: MlflowBackend, attempt: int | None) -> Callable[[Op, str | None], Op | None]:
    # Each run's attempt is read before the file's first record to it: the file's own tags
    # would otherwise set the attempt number back before its status is judged.
    latest: dict[str, int | None] = {}

    def screen(op: Op, run_id: str | None) -> Op | None:
        if attempt is None or run_id is None:
            return op
        if run_id not in latest:
            latest[run_id] = _run_attempt(backend, run_id)
        return for_replay(op, attempt, latest[run_id])

    return screen


class StepReader(Protocol):
    """What a run holds of its metrics (:class:`blocktrain.track.backend.MlflowBackend`)."""

    def latest_steps(self, run_id: str) -> dict[str, int]: ...
    def steps_of(self, run_id: str, key: str) -> set[int]: ...


def unsent_points(backend: StepReader, spill: Path) -> Callable[[Op, str | None], Op | None]:
    """A screen for ``spill``'s records that leaves out the metric points whose step their run
    holds (:mod:`blocktrain.track.repeats`).

    What a run holds is read before the file's first metrics to it go, so that the file's own
    points do not count: one request for the run, and one per key that the run holds at or
    above the file's lowest step of it. A run that the file creates holds nothing before it.
    """
    spilled: dict[str, list[MetricItem]] = {}
    for line in spill.read_text(encoding="utf-8").splitlines():
        op = Op.from_json(line) if line else None
        if op is not None and (run_id := op.data.get("run_id")) is not None:
            spilled.setdefault(run_id, []).extend(_metric_items(op))
    held: dict[str, dict[str, set[int]]] = {}

    def screen(op: Op, run_id: str | None) -> Op | None:
        target, items = op.data.get("run_id"), _metric_items(op)
        if target is None or not items:
            return op
        if target not in held:
            lowest = lowest_steps(spilled.get(target, items))
            keys = keys_to_read(lowest, backend.latest_steps(target))
            held[target] = {key: backend.steps_of(target, key) for key in keys}
        kept = drop_held(items, held[target])
        if len(kept) == len(items):
            return op
        if op.kind == "metrics":
            return Op("metrics", {**op.data, "items": kept}) if kept else None
        if not (kept or op.data.get("params") or op.data.get("tags")):
            return None
        return Op("batch", {**op.data, "metrics": kept})

    return screen


def _metric_items(op: Op) -> list[MetricItem]:
    if op.kind == "metrics":
        return op.data["items"]
    return op.data.get("metrics", []) if op.kind == "batch" else []


def _run_attempt(backend: MlflowBackend, run_id: str) -> int | None:
    tags: dict[str, str] = dict(backend.get_run(run_id).data.tags)
    try:
        return int(tags[ATTEMPT_TAG])
    except (KeyError, ValueError):
        return None


def replay_unsent(backend: MlflowBackend, log_dir: Path, run_id: str | None = None) -> None:
    """Send what earlier attempts kept on disk (only ``run_id``'s, when given); a file that
    still fails waits for the next start."""
    for spill in spill_files(log_dir, run_id):
        try:
            sent = send_spill(backend, spill)
        except Exception as exc:  # noqa: BLE001 - left for the next start; the job goes on
            _log.warning("could not send buffered MLflow records in %s yet: %s", spill, exc)
        else:
            if sent is not None:
                _log.warning("sent %d buffered MLflow records from %s", sent, spill)


def replay_main(argv: list[str]) -> int:
    """``python -m blocktrain.track replay [FILE ...]``: send records kept during an outage."""
    if not argv or argv[0] != "replay":
        print("usage: python -m blocktrain.track replay [SPILL.jsonl ...]")  # noqa: T201
        return 2
    config = TrackConfig.from_environ(os.environ, Path.cwd())
    files = [Path(a) for a in argv[1:]] or spill_files(config.log_dir)
    backend = backend_for(config)
    for file in files:
        sent = send_spill(backend, file)
        said = "nothing to send" if sent is None else f"sent {sent} records"
        print(f"{file}: {said}")  # noqa: T201
    return 0
