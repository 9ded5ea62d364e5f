"""The MLflow model registry: a run's MLflow model registered as a new version of a named
model, and the version that a ``models:/`` URI names.

A URI is ``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@ALIAS``. A name,
version or alias the registry lacks is a :class:`~blocktrain.errors.BlocktrainError` whose one
line names what the registry has. A version's description holds the run's final metrics; its
tags the run id, run name and git commit.

Must not: import mlflow at module level, import torch, or load a model's weights
(:mod:`blocktrain.train.registered` does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocktrain.errors import BlocktrainError
from blocktrain.track.backend import MlflowBackend

if TYPE_CHECKING:
    from mlflow import MlflowClient

SCHEME = "models:/"
MODEL_ARTIFACT = "model"
"""Where a training's MLflow model goes among the run's artifacts."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FORMS = "models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS"
_SHOWN = 10  # names or versions listed in an error message


def is_model_uri(text: object) -> bool:
    """Whether ``text`` is a ``models:/`` URI (a registered model) rather than a run id or path."""
    return isinstance(text, str) and text.startswith(SCHEME)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """What a ``models:/`` URI names: a version, an alias, or (neither) the latest version."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{SCHEME}{self.name}@{self.alias}"
        return f"{SCHEME}{self.name}/{self.version or 'latest'}"


def parse_model_uri(uri: str) -> ModelRef:
    """The parts of ``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@ALIAS``."""
    body = uri.removeprefix(SCHEME) if is_model_uri(uri) else None
    name, alias = body.split("@", 1) if body and "@" in body else (body, None)
    version = None
    if name is not None and alias is None and "/" in name:
        name, version = name.split("/", 1)
    well_formed = (
        name is not None
        and NAME_PATTERN.fullmatch(name) is not None
        and (alias is None or NAME_PATTERN.fullmatch(alias) is not None)
        and (alias is not None or version == "latest" or (version or "").isdigit())
    )
    if not well_formed or name is None:
        raise BlocktrainError(f"{uri!r} is not a registered model URI; write {_FORMS}")
    return ModelRef(name, None if version == "latest" else version, alias)


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a registered model, and the run it was registered from."""

    name: str
    version: str
    run_id: str | None
    source: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.name}/{self.version}"


def describe(metrics: Mapping[str, float], *, run_name: str, run_id: str, weights: str) -> str:
    """A version's description (Markdown, as the MLflow UI shows it): where the weights come
    from and the run's final metrics."""
    lines = [
        f"{weights} of run **{run_name}** (`{run_id}`).",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.6g} |" for name, value in sorted(metrics.items())]
    return "\n".join(lines) + "\n"


def version_tags(run_id: str, run_name: str, commit: str | None) -> dict[str, str]:
    """The tags a registered version gets: where it came from."""
    tags = {"run_id": run_id, "run_name": run_name}
    if commit:
        tags["git_commit"] = commit
    return tags


def register(
    tracking_uri: str, name: str, run_id: str, *, metrics: Mapping[str, float], weights: str
) -> Version:
    """Register the run's MLflow model (artifacts under ``model``) as a new version of ``name``,
    creating the registered model when it is new. The model must be uploaded already."""
    from mlflow.exceptions import MlflowException

    backend = MlflowBackend(tracking_uri)
    client = backend.client
    run = client.get_run(run_id)
    run_name = str(run.info.run_name or run_id)
    commit = run.data.tags.get("mlflow.source.git.commit")
    # The embedded SQLite store numbers versions in the database: one writer at a time.
    with backend.exclusive():
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        created = client.create_model_version(
            name,
            f"runs:/{run_id}/{MODEL_ARTIFACT}",
            run_id,
            tags=version_tags(run_id, run_name, commit),
            description=describe(metrics, run_name=run_name, run_id=run_id, weights=weights),
        )
    return _version(created)


def resolve(tracking_uri: str, uri: str) -> Version:
    """The registered version ``uri`` names; raises a one-line BlocktrainError when the
    registry has no such model, version or alias."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = parse_model_uri(uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if ref.alias is not None:
            return _version(client.get_model_version_by_alias(ref.name, ref.alias))
        if ref.version is not None:
            return _version(client.get_model_version(ref.name, ref.version))
        return _latest(client, ref, tracking_uri)
    except MlflowException as exc:
        # The SQL store calls a missing alias an invalid parameter; the REST API, missing.
        missing = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE" if ref.alias else "")
        if exc.error_code not in missing:
            raise
    raise BlocktrainError(_missing(client, ref, tracking_uri)) from None


def download(tracking_uri: str, version: Version, into: Path) -> Path:
    """The version's MLflow model folder, downloaded into ``into``."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    location = client.get_model_version_download_uri(version.name, version.version)
    into.mkdir(parents=True, exist_ok=True)
    local = download_artifacts(
        artifact_uri=str(location), dst_path=str(into), tracking_uri=tracking_uri
    )
    return Path(local)


def _version(found: Any) -> Version:  # noqa: ANN401 - mlflow's ModelVersion, imported lazily
    return Version(
        name=str(found.name),
        version=str(found.version),
        run_id=str(found.run_id) if found.run_id else None,
        source=str(found.source),
    )


def _versions(client: MlflowClient, name: str) -> list[Version]:
    """Every version of ``name``, the newest first."""
    found = client.search_model_versions(f"name='{name}'")
    return sorted(map(_version, found), key=lambda v: -int(v.version))


def _latest(client: MlflowClient, ref: ModelRef, tracking_uri: str) -> Version:
    client.get_registered_model(ref.name)  # a missing name raises RESOURCE_DOES_NOT_EXIST
    versions = _versions(client, ref.name)
    if not versions:
        raise BlocktrainError(
            f"registered model {ref.name!r} has no versions yet in the MLflow model registry at "
            f"{tracking_uri}; register one (register_as in the training's ExportConfig)"
        )
    return versions[0]


def _missing(client: MlflowClient, ref: ModelRef, tracking_uri: str) -> str:
    """What the registry lacks of ``ref``, and what it has instead."""
    where = f"in the MLflow model registry at {tracking_uri}"
    models: list[Any] = list(client.search_registered_models(max_results=100))
    names = sorted(str(m.name) for m in models)
    if ref.name not in names:
        have = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
        return (
            f"no registered model {ref.name!r} {where} (it has: {have or 'none'}); check the "
            "name on the Models page of the MLflow UI"
        )
    if ref.alias is not None:
        model: Any = client.get_registered_model(ref.name)
        named: dict[str, str] = dict(model.aliases or {})
        aliases = sorted(named)
        return (
            f"registered model {ref.name!r} has no alias {ref.alias!r} {where} (aliases: "
            f"{', '.join(aliases) or 'none'}); use one, or {SCHEME}{ref.name}/VERSION"
        )
    numbers = [v.version for v in _versions(client, ref.name)]
    have = ", ".join(numbers[:_SHOWN]) + (", ..." if len(numbers) > _SHOWN else "")
    return (
        f"registered model {ref.name!r} has no version {ref.version} {where} (versions: "
        f"{have or 'none'}); use one of them, or {SCHEME}{ref.name}/latest"
    )
