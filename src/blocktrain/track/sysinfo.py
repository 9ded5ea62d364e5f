"""Facts about the machine a run executes on, as MLflow tags."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path


def _memory_gib() -> str | None:
    try:
        with Path("/proc/meminfo").open(encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f}"
    except OSError:
        pass
    return None


def _torch_facts() -> dict[str, str]:
    # Only when torch is installed: the job imports it anyway, so this costs nothing extra there.
    if importlib.util.find_spec("torch") is None:
        return {}
    import torch

    facts = {"sys.torch": str(torch.__version__)}
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        facts["sys.cuda"] = str(torch.version.cuda)  # pyright: ignore[reportUnknownMemberType,reportAttributeAccessIssue]
        facts["sys.gpus"] = ", ".join(names)
        facts["sys.gpu_count"] = str(len(names))
    else:
        facts["sys.cuda"] = "unavailable"
        facts["sys.gpu_count"] = "0"
    return facts


def system_tags() -> dict[str, str]:
    """Python, platform, CPU count, memory, and torch/CUDA/GPU facts when torch is present."""
    tags = {
        "sys.python": platform.python_version(),
        "sys.platform": platform.platform(),
        "sys.cpu_count": str(os.cpu_count() or 0),
        "sys.executable": sys.executable,
    }
    memory = _memory_gib()
    if memory is not None:
        tags["sys.memory_gib"] = memory
    tags.update(_torch_facts())
    return tags
