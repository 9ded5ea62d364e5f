"""A registered model version as a checkpoint file, for ``evaluate`` and ``predict``.

``models:/NAME/VERSION`` (or ``models:/NAME/latest``, ``models:/NAME@ALIAS``) names an MLflow
model that a training registered (``ExportConfig.register_as``): the weights of its best
checkpoint and, in its ``MLmodel`` metadata, the entry function's recorded arguments. The
version is looked up in the registry of the project's tracking URI, downloaded once, and kept
as a checkpoint (weights under ``model``, arguments under ``args``, with its checksum file)
under the training run's ``downloaded/registered/NAME/VERSION`` folder; code that reads a
run's checkpoints reads a registered version the same way.

Must not: register versions or write to a run; it only reads the registry.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from blocktrain.core.atomic import locked
from blocktrain.core.paths import Layout, project_root
from blocktrain.errors import BlocktrainError
from blocktrain.track import registry
from blocktrain.track.backend import tracking_uri
from blocktrain.train.checkpoint import files as checkpoint_files

if TYPE_CHECKING:
    from blocktrain.track.registry import Version


@dataclass(frozen=True, slots=True)
class RegisteredCheckpoint:
    """A registered version kept as a checkpoint file, and the version it holds."""

    path: Path
    version: Version

    @property
    def run_id(self) -> str:
        """The training run the version was registered from."""
        return cast("str", self.version.run_id)


def registered_checkpoint(uri: str) -> RegisteredCheckpoint:
    """The version ``uri`` names as a local checkpoint file, downloaded on first use.

    Every rank of a job may call it: one downloads while the others wait for the file.
    Raises :class:`~blocktrain.errors.BlocktrainError` for a name, version or alias that the
    registry lacks, and for a version that no blocktrain training registered.
    """
    root = project_root(Path.cwd())
    tracking = tracking_uri(os.environ, root)
    version = registry.resolve(tracking, uri)
    if version.run_id is None:
        raise BlocktrainError(
            f"{version.uri} ({uri}) was not registered from a run; load it with "
            f"mlflow.pytorch.load_model('{version.uri}') instead"
        )
    folder = Layout(root).run(version.run_id).downloaded / "registered" / version.name
    folder /= version.version
    with locked(folder.with_name(f"{version.version}.lock")):
        found = checkpoint_files.newest_good(folder)
        if found is None:
            found = _keep(tracking, version, folder)
    return RegisteredCheckpoint(found, version)


def _keep(tracking: str, version: Version, folder: Path) -> Path:
    """Download the version and save it as the checkpoint of ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as scratch:
        local = registry.download(tracking, version, Path(scratch))
        state = checkpoint_state(local, version)
    return checkpoint_files.save(state, folder, 0)


def checkpoint_state(local: Path, version: Version) -> dict[str, Any]:
    """The checkpoint of a downloaded MLflow model folder: its weights, the training's
    arguments from its metadata, and which version it is."""
    from mlflow.models import Model

    from blocktrain.train.export import root_logging_kept

    metadata: dict[str, Any] = Model.load(str(local)).metadata or {}  # pyright: ignore[reportUnknownMemberType]
    kept = metadata.get("blocktrain")
    if not isinstance(kept, dict) or "args" not in kept:
        raise BlocktrainError(
            f"{version.uri} holds no training arguments (it was not registered by a blocktrain "
            f"training); load it with mlflow.pytorch.load_model('{version.uri}') instead"
        )
    with root_logging_kept():
        import mlflow.pytorch

    module = mlflow.pytorch.load_model(str(local))  # pyright: ignore[reportPrivateImportUsage, reportUnknownMemberType, reportUnknownVariableType]
    weights = {
        name: tensor.detach().cpu().clone()
        for name, tensor in cast("dict[str, Any]", module.state_dict()).items()  # pyright: ignore[reportUnknownMemberType]
    }
    registered = {"uri": version.uri, "run_id": version.run_id, "source": version.source}
    return {"model": weights, "args": cast("Any", kept["args"]), "registered": registered}
