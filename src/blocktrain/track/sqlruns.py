"""New runs in MLflow's SQLite store with the standard library's sqlite3 alone, for launches.

``import mlflow`` and opening its SQLAlchemy store cost a launch about 3 s, most of it; what a
launch writes is a handful of rows: the run, its tags and params, its status. :func:`open_store`
gives a writer of exactly the rows MLflow's store writes for those calls
(tests/unit/test_sqlruns.py creates runs both ways and compares what MLflow reads back), in one
transaction per :meth:`SqliteRuns.exclusive` block, so that a launch that fails leaves no row.

It only writes to a database it knows: an existing file at a schema revision listed in
:data:`KNOWN_REVISIONS`, whose experiment exists, is active, and keeps its artifacts in a local
folder. Anything else (the project's first launch, which creates the database; another MLflow's
schema; a workspace other than the default) gets None, and the launch goes through MLflow.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shutil
import sqlite3
import urllib.parse
import uuid
from collections.abc import Generator, Mapping
from pathlib import Path

from blocktrain.core.atomic import locked
from blocktrain.errors import BlocktrainError
from blocktrain.track.backend import (
    PARAM_VALUE_LIMIT,
    RUN_NAME_TAG,
    USER_TAG,
    end_time,
    now_ms,
    sqlite_path,
)

KNOWN_REVISIONS = frozenset({"dc11669786a5"})
"""Alembic heads of MLflow's tracking schema whose runs, tags and params tables this writes.
A test holds the installed MLflow's head to this set, so an upgrade that moves it fails there."""

DEFAULT_WORKSPACE = "default"
# MLflow's limits and name rule (mlflow.utils.validation), checked before anything is written.
_KEY_LIMIT = 250
_TAG_VALUE_LIMIT = 8000
_NAME = re.compile(r"^[/\w.\- :]*$")
_STATUSES = frozenset({"SCHEDULED", "RUNNING", "FINISHED", "FAILED", "KILLED"})


def open_store(uri: str, environ: Mapping[str, str]) -> SqliteRuns | None:
    """The writer for ``uri``, or None when this database must be left to MLflow."""
    database = sqlite_path(uri)
    if database is None or not database.is_file():
        return None
    if environ.get("MLFLOW_WORKSPACE", DEFAULT_WORKSPACE) != DEFAULT_WORKSPACE:
        return None
    try:
        with contextlib.closing(_connect(database)) as connection:
            rows = connection.execute("select version_num from alembic_version").fetchall()
    except sqlite3.Error:
        return None
    if len(rows) != 1 or rows[0][0] not in KNOWN_REVISIONS:
        return None
    return SqliteRuns(database)


def _connect(database: Path) -> sqlite3.Connection:
    # isolation_level None: transactions are opened explicitly (BEGIN IMMEDIATE), so that a
    # writer waits for MLflow's own writers up front instead of failing half-way.
    return sqlite3.connect(database, timeout=60.0, isolation_level=None)


class SqliteRuns:
    """Creates, tags, parametrises, sets the status of and deletes runs; every call inside
    :meth:`exclusive`, whose block is one transaction."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self._connection: sqlite3.Connection | None = None
        self._artifacts: list[Path] = []
        self._experiments: dict[str, tuple[int, str]] = {}

    @contextlib.contextmanager
    def exclusive(self) -> Generator[None]:
        """Hold the store's lock file (as MlflowBackend does) and one transaction: committed
        when the block ends, rolled back (artifact files too) when it raises."""
        if self._connection is not None:  # nested: the outer block commits
            yield
            return
        with locked(self.database.with_name(self.database.name + ".lock")):
            connection = _connect(self.database)
            self._connection, self._artifacts = connection, []
            try:
                connection.execute("begin immediate")
                yield
                connection.execute("commit")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("rollback")
                for folder in self._artifacts:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            finally:
                self._connection = None
                connection.close()

    def _sql(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("SqliteRuns is written to inside exclusive() only")
        return self._connection

    def experiment(self, name: str) -> tuple[int, str] | None:
        """(id, artifact folder URI) of the active, local experiment ``name``; None otherwise."""
        if name in self._experiments:
            return self._experiments[name]
        row = (
            self._sql()
            .execute(
                "select experiment_id, artifact_location, lifecycle_stage from experiments "
                "where name = ? and workspace = ?",
                (name, DEFAULT_WORKSPACE),
            )
            .fetchone()
        )
        if row is None or row[2] != "active" or _local_folder(str(row[1] or "")) is None:
            return None
        self._experiments[name] = (int(row[0]), str(row[1]))
        return self._experiments[name]

    def create_run(self, experiment: str, run_name: str | None, tags: Mapping[str, str]) -> str:
        """A RUNNING run named ``run_name`` with ``tags``, as ``MlflowClient.create_run`` makes
        it; the experiment must exist (:meth:`experiment`)."""
        found = self.experiment(experiment)
        if found is None:
            raise BlocktrainError(f"experiment {experiment!r} is not in {self.database}")
        experiment_id, location = found
        name = run_name or tags.get(RUN_NAME_TAG) or f"run-{uuid.uuid4().hex[:8]}"
        all_tags = {**tags, RUN_NAME_TAG: tags.get(RUN_NAME_TAG, name)}
        _check_pairs("tag", all_tags, _TAG_VALUE_LIMIT)
        run_id = uuid.uuid4().hex
        self._sql().execute(
            "insert into runs (run_uuid, name, source_type, source_name, entry_point_name, "
            "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
            "artifact_uri, experiment_id, deleted_time) "
            "values (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, null, '', 'active', ?, ?, null)",
            (
                run_id,
                name,
                tags.get(USER_TAG, "unknown"),
                now_ms(),
                f"{location.rstrip('/')}/{run_id}/artifacts",
                experiment_id,
            ),
        )
        self._insert("tags", run_id, all_tags)
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        _check_pairs("param", params, PARAM_VALUE_LIMIT)
        self._insert("params", run_id, params)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        """Copy the file ``path`` under the run's artifacts, in ``artifact_path``."""
        folder = self._artifact_folder(run_id)
        target = folder / artifact_path if artifact_path else folder
        target.mkdir(parents=True, exist_ok=True)
        self._artifacts.append(folder.parent)
        shutil.copy2(path, target / path.name)

    def set_status(self, run_id: str, status: str, end_time_ms: int | None) -> None:
        if status not in _STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        end = end_time(status, end_time_ms)
        if end is None:
            self._sql().execute("update runs set status = ? where run_uuid = ?", (status, run_id))
        else:
            self._sql().execute(
                "update runs set status = ?, end_time = ? where run_uuid = ?",
                (status, end, run_id),
            )

    def delete_run(self, run_id: str) -> None:
        """Mark the run deleted, as MLflow does (``mlflow gc`` removes it for good)."""
        self._sql().execute(
            "update runs set lifecycle_stage = 'deleted', deleted_time = ? where run_uuid = ?",
            (now_ms(), run_id),
        )

    def _insert(self, table: str, run_id: str, pairs: Mapping[str, str]) -> None:
        self._sql().executemany(
            f"insert into {table} (key, value, run_uuid) values (?, ?, ?)",  # noqa: S608 - ours
            [(key, value, run_id) for key, value in pairs.items()],
        )

    def _artifact_folder(self, run_id: str) -> Path:
        row = (
            self._sql()
            .execute("select artifact_uri from runs where run_uuid = ?", (run_id,))
            .fetchone()
        )
        folder = _local_folder(str(row[0])) if row else None
        if folder is None:
            raise BlocktrainError(f"run {run_id} keeps no local artifact folder")
        return folder


def _local_folder(location: str) -> Path | None:
    """The folder of a ``file:`` URI or plain absolute path; None for any remote store."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and not parts.query:
        return Path(urllib.parse.unquote(parts.path))
    if not parts.scheme and Path(location).is_absolute():
        return Path(location)
    return None


def _check_pairs(kind: str, pairs: Mapping[str, str], value_limit: int) -> None:
    """MLflow's rules for keys and values, so that a run it would refuse is refused here too."""
    for key, value in pairs.items():
        norm = posixpath.normpath(key)
        if (
            not key
            or len(key) > _KEY_LIMIT
            or not _NAME.match(key)
            or norm != key
            or norm.startswith(("..", "/"))
        ):
            raise BlocktrainError(
                f"MLflow refuses the {kind} name {key[:80]!r}: names are at most {_KEY_LIMIT} "
                "letters, digits, _ - . : / and spaces, and no path that resolves elsewhere"
            )
        if len(value) > value_limit:
            raise BlocktrainError(
                f"the {kind} {key!r} is {len(value)} characters long; MLflow keeps at most "
                f"{value_limit}"
            )
