"""Where and how a training computes: the device, mixed precision, the compiled and
DDP-wrapped model, and the seeded random generators.

Must not: read data, log, checkpoint or decide anything about the loop; it only sets up the
objects the loop computes with.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from blocktrain.errors import BlocktrainError

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CUDA's too) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # pyright: ignore[reportUnknownMemberType]


def default_device() -> torch.device:
    """The GPU this process was bound to (see blocktrain.distributed), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for the forward pass (and the loss); a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AMP_DTYPES[precision])


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot train in."""
    if precision == "fp16" and device.type != "cuda":
        raise BlocktrainError("precision fp16 needs a GPU; use bf16 or fp32 on the CPU")


def place(model: nn.Module, device: torch.device, *, channels_last: bool) -> nn.Module:
    """``model`` moved to ``device`` in place (so an optimizer built before stays valid)."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
    return model


def compiled(model: nn.Module, *, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled``, else ``model`` itself."""
    return cast("nn.Module", torch.compile(model) if enabled else model)


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel, bound to ``device`` when it is a GPU."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:  # pyright: ignore[reportPrivateImportUsage]
    """The gradient scaler fp16 needs; a disabled one (which passes through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # pyright: ignore[reportPrivateImportUsage]
