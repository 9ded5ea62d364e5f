"""A trained model in the forms people deploy: state dict, TorchScript, ONNX, MLflow model.

Every format is written from a CPU copy in eval mode, traced or exported with a sample batch
of inputs; the TorchScript and ONNX files are run on that batch and compared with PyTorch's
output (ONNX through onnxruntime), so a file that computes something else is reported, not
shipped silently. Each file goes to the current MLflow run in the background; the MLflow model
(under the run's ``model`` artifacts) carries the caller's metadata in its ``MLmodel`` file,
such as the arguments that rebuild the model's inputs.

Must not: train, or choose the weights or the folder (the caller passes them in).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import shutil
import warnings
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from blocktrain.errors import BlocktrainError
from blocktrain.track.registry import MODEL_ARTIFACT
from blocktrain.train.config import ExportConfig

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from blocktrain.core.values import JSON
    from blocktrain.track import Tracker

_log = logging.getLogger("blocktrain.train")
# Beyond this much weight data ONNX's single-file limit (2 GiB) is near: weights go beside it.
_ONNX_INLINE_LIMIT = 1 << 30


class ExportError(BlocktrainError):
    """One or more exports failed or did not reproduce PyTorch's output."""


@dataclass(slots=True)
class Exported:
    """What :func:`export_model` wrote, and how far each check's outputs were apart."""

    files: dict[str, Path] = field(default_factory=dict[str, Path])
    max_abs_diff: dict[str, float] = field(default_factory=dict[str, float])
    failures: dict[str, str] = field(default_factory=dict[str, str])


def export_model(
    model: nn.Module,
    sample: torch.Tensor,
    folder: Path,
    config: ExportConfig,
    *,
    weights: Mapping[str, Any] | None = None,
    tracker: Tracker | None = None,
    metadata: Mapping[str, JSON] | None = None,
) -> Exported:
    """Write ``config.formats`` of ``model`` (with ``weights`` loaded, if given) to ``folder``.

    ``sample`` is a batch of inputs (two or more examples keep the batch size dynamic);
    ``metadata`` goes into the MLflow model's ``MLmodel`` file. All formats are attempted;
    raises :class:`ExportError` naming every one that failed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).cpu().eval()
    if weights is not None:
        cpu_model.load_state_dict(weights)
    sample = sample.detach().cpu().float().contiguous()
    with torch.no_grad():
        expected = cast("torch.Tensor", cpu_model(sample)).float()
    result = Exported()
    writers = {
        "pth": _pth,
        "torchscript": _torchscript,
        "onnx": _onnx,
        "mlflow": functools.partial(_mlflow, metadata=metadata),
    }
    for name in config.formats:
        try:
            path, diff = writers[name](cpu_model, sample, expected, folder, config)
        except Exception as exc:  # noqa: BLE001 - every format is tried; all failures are reported
            result.failures[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            continue
        result.files[name] = path
        if diff is not None:
            result.max_abs_diff[name] = diff
            if not _close(diff, expected, config):
                result.failures[name] = (
                    f"output differs from PyTorch's by up to {diff:.3g} "
                    f"(rtol {config.rtol}, atol {config.atol})"
                )
        if tracker is not None:
            tracker.log_artifacts(path, MODEL_ARTIFACT if name == "mlflow" else "exports")
    if result.failures:
        shown = "; ".join(f"{name}: {why}" for name, why in result.failures.items())
        raise ExportError(
            f"export to {folder} failed for {shown}; fix the model or drop the format from "
            "ExportConfig.formats"
        )
    return result


def _close(diff: float, expected: torch.Tensor, config: ExportConfig) -> bool:
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return diff <= config.atol + config.rtol * scale


def _max_diff(actual: NDArray[Any] | torch.Tensor, expected: torch.Tensor) -> float:
    got = torch.as_tensor(np.asarray(actual), dtype=torch.float32)
    if got.shape != expected.shape:
        raise ValueError(f"output shape {tuple(got.shape)} instead of {tuple(expected.shape)}")
    return float((got - expected).abs().max()) if expected.numel() else 0.0


def _pth(
    model: nn.Module, sample: torch.Tensor, expected: torch.Tensor, folder: Path, _: ExportConfig
) -> tuple[Path, float | None]:
    path = folder / "model.pth"
    torch.save(model.state_dict(), path)
    return path, None


def _torchscript(
    model: nn.Module, sample: torch.Tensor, expected: torch.Tensor, folder: Path, _: ExportConfig
) -> tuple[Path, float | None]:
    path = folder / "model.pt"
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream but still what many C++ and mobile runtimes load.
        warnings.filterwarnings("ignore", message=".*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*deprecated", category=DeprecationWarning)
        traced = cast("torch.jit.ScriptModule", torch.jit.trace(model, sample))  # pyright: ignore[reportUnknownMemberType, reportPrivateImportUsage]
        traced.save(str(path))  # pyright: ignore[reportUnknownMemberType]
        loaded = cast("nn.Module", torch.jit.load(str(path)))  # pyright: ignore[reportUnknownMemberType, reportPrivateImportUsage]
        with torch.no_grad():
            output = cast("torch.Tensor", loaded(sample))
    return path, _max_diff(output.float(), expected)


def _onnx(
    model: nn.Module,
    sample: torch.Tensor,
    expected: torch.Tensor,
    folder: Path,
    config: ExportConfig,
) -> tuple[Path, float | None]:
    import onnxruntime  # pyright: ignore[reportMissingTypeStubs]

    path = folder / "model.onnx"
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    batch = torch.export.Dim.AUTO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress chatter, not our concern
        torch.onnx.export(  # pyright: ignore[reportUnknownMemberType]
            model,
            (sample,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            opset_version=config.onnx_opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            external_data=weight_bytes > _ONNX_INLINE_LIMIT,
            verbose=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = cast("str", session.get_inputs()[0].name)  # pyright: ignore[reportUnknownMemberType]
    outputs = cast("list[NDArray[Any]]", session.run(None, {name: sample.numpy()}))  # pyright: ignore[reportUnknownMemberType]
    return path, _max_diff(outputs[0], expected)


def _mlflow(
    model: nn.Module,
    sample: torch.Tensor,
    expected: torch.Tensor,
    folder: Path,
    _: ExportConfig,
    *,
    metadata: Mapping[str, JSON] | None = None,
) -> tuple[Path, float | None]:
    with root_logging_kept():
        import mlflow.pytorch
    from mlflow.models import infer_signature  # pyright: ignore[reportUnknownVariableType]

    path = folder / "mlflow_model"
    shutil.rmtree(path, ignore_errors=True)  # save_model refuses an existing folder
    signature = infer_signature(sample.numpy(), expected.numpy())
    # Naming the requirements skips MLflow's inference of them, which imports the model in a
    # subprocess and takes longer than the rest of the export.
    # Without pip in the environment MLflow warns that it cannot pin pip; nothing to act on.
    environment_log = logging.getLogger("mlflow.utils.environment")
    level = environment_log.level
    environment_log.setLevel(logging.ERROR)
    try:
        mlflow.pytorch.save_model(  # pyright: ignore[reportPrivateImportUsage, reportUnknownMemberType]
            model,
            str(path),
            signature=signature,
            input_example=sample.numpy(),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            metadata=dict(metadata) if metadata else None,
        )
    finally:
        environment_log.setLevel(level)
    return path, None


@contextlib.contextmanager
def root_logging_kept() -> Generator[None]:
    """Undo what an import does to the root logger.

    ``mlflow.pytorch`` calls ``logging.basicConfig(level=logging.ERROR)`` when imported, which
    would silence every warning of the process from then on (the tracker's closing report of
    records it could not send, for one).
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
