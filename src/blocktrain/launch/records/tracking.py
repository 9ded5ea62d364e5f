"""The launcher's MLflow side: runs are created before the job is submitted.

Creating them up front gives the user a run id at once, and lets every attempt of the job
resume the same run. A sweep (several runs in one launch) also gets a parent run, created
first and RUNNING until its runs end; its runs name it in ``mlflow.parentRunId``, so that the
MLflow UI nests them under it. Runs go through :mod:`blocktrain.track.sqlruns` or
:mod:`blocktrain.track.restruns` when the store is a SQLite database or a server they know (no
mlflow import: the launch waits seconds less), else through MLflow, imported only here, after
the arguments were validated.
"""

from __future__ import annotations

import contextlib
import socket
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from blocktrain.core.redact import Redactor
from blocktrain.core.values import JSON, flatten
from blocktrain.errors import BlocktrainError
from blocktrain.track import ATTEMPT_TAG, param_strings
from blocktrain.track.backend import EMBEDDED_ARTIFACTS, MlflowBackend
from blocktrain.track.gitstate import GitState, git_tags
from blocktrain.track.sqlruns import open_store
from blocktrain.track.tracker import PARENT_TAG


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Refuse a tracking server that does not accept a connection within ``timeout_s``.

    MLflow's client retries an unreachable server for minutes before its traceback; a launch
    asks once, before it creates anything. Only ``http(s)`` URIs are asked: a database or a
    folder fails at once on its own.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = f"{parts.scheme}://{parts.hostname}:{port}"  # without any credentials in the URI
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BlocktrainError(
            f"tracking server {shown} is unreachable ({reason}); start it, or point "
            "MLFLOW_TRACKING_URI at one that runs"
        ) from None


def backend(uri: str, root: Path) -> MlflowBackend:
    artifacts = root / EMBEDDED_ARTIFACTS if uri.startswith("sqlite:") else None
    return MlflowBackend(uri, artifacts)


class RunWriter(Protocol):
    """What a launch writes new runs with: MlflowBackend, or the SQLite writer without mlflow."""

    def exclusive(self) -> AbstractContextManager[None]: ...
    def create_run(self, experiment: str, run_name: str | None, tags: Mapping[str, str]) -> str: ...
    def log_params(self, run_id: str, params: Mapping[str, str]) -> None: ...
    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None: ...
    def set_status(self, run_id: str, status: str, end_time_ms: int | None) -> None: ...
    def delete_run(self, run_id: str) -> None: ...


def writer(uri: str, root: Path, experiment: str, environ: Mapping[str, str]) -> RunWriter:
    """A writer without mlflow when it knows the store or server and ``experiment`` is there
    (:mod:`~blocktrain.track.sqlruns`, :mod:`~blocktrain.track.restruns`), else MLflow's client,
    which also creates the database and the experiment the first time."""
    if uri.startswith(("http://", "https://")):
        from blocktrain.track.restruns import open_server  # urllib and ssl: servers only

        server = open_server(uri, experiment, environ)
        if server is not None:
            return server
        return backend(uri, root)
    fast = open_store(uri, environ)
    if fast is not None:
        with fast.exclusive():
            if fast.experiment(experiment) is not None:
                return fast
    return backend(uri, root)


SWEEP_TAG = "blocktrain.sweep"


@dataclass(frozen=True, kw_only=True, slots=True)
class Parent:
    """A sweep's own run: its name and its params (the swept keys and their values)."""

    name: str
    params: dict[str, str]


def create_runs(
    store: RunWriter,
    *,
    experiment: str,
    names: Sequence[str | None],
    args: Sequence[Mapping[str, JSON]],
    tags: Mapping[str, str],
    git: GitState | None,
    diff_file: Path | None,
    redact: Redactor,
    parent: Parent | None = None,
    created: Callable[[int], object] | None = None,
) -> tuple[str | None, list[str]]:
    """One SCHEDULED run per argument set, with params, code and launch tags; with ``parent``,
    first a RUNNING parent run that they are nested under. Returns (parent id, run ids).
    ``created`` is told how many runs are made so far, after each one."""
    made: list[str] = []
    with store.exclusive():
        try:
            parent_id = None
            if parent is not None:
                parent_id = _create_parent(store, experiment, parent, {**git_tags(git), **tags})
                made.append(parent_id)
            for index, (name, values) in enumerate(zip(names, args, strict=True)):
                run_tags = {**git_tags(git), **tags}
                if len(args) > 1:
                    run_tags["blocktrain.array_index"] = str(index)
                if parent_id is not None:
                    run_tags[PARENT_TAG] = parent_id
                run_id = store.create_run(experiment, name, run_tags)
                made.append(run_id)
                flat = flatten(dict(values))
                _log_params(store, run_id, {k: redact(str(v)) for k, v in flat.items()})
                if diff_file is not None:
                    store.log_artifact(run_id, diff_file, "code")
                store.set_status(run_id, "SCHEDULED", None)
                if created is not None:
                    created(index + 1)
        except BaseException:
            _delete(store, made)
            raise
    return parent_id, made[1:] if parent_id is not None else made


def _create_parent(
    store: RunWriter, experiment: str, parent: Parent, tags: Mapping[str, str]
) -> str:
    run_id = store.create_run(experiment, parent.name, {**tags, SWEEP_TAG: "true"})
    _log_params(store, run_id, parent.params)
    store.set_status(run_id, "RUNNING", None)
    return run_id


def _log_params(store: RunWriter, run_id: str, params: Mapping[str, object]) -> None:
    store.log_params(run_id, param_strings(params))


def delete_runs(store: RunWriter, run_ids: Sequence[str]) -> None:
    """Remove runs whose job never got submitted, so no orphan run is left behind."""
    with store.exclusive():
        _delete(store, run_ids)


def _delete(store: RunWriter, run_ids: Sequence[str]) -> None:
    for run_id in run_ids:
        with contextlib.suppress(Exception):
            store.delete_run(run_id)


def last_attempt(store: MlflowBackend, run_id: str) -> tuple[int, dict[str, str]]:
    """The run's last attempt number and its logged params."""
    run = store.get_run(run_id)
    params: dict[str, str] = dict(run.data.params)
    try:
        return int(run.data.tags.get(ATTEMPT_TAG, "0")), params
    except ValueError:
        return 0, params
