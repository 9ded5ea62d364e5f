"""How much memory a preloaded dataset needs and how much this process may still use.

The limit is the smaller of the machine's available memory and what the process's cgroup
(which Slurm's ``--mem`` sets) still allows, v1 or v2, at every level up to the root.

Must not allocate or load anything: it only measures and compares.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from blocktrain.core import envvars
from blocktrain.errors import BlocktrainError

HEADROOM = 0.9  # leave a tenth for the model, the DataLoader and the allocator's slack


class MemoryBudgetError(BlocktrainError):
    """A preloaded dataset that will not fit in memory."""


def format_size(size: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    index = 0
    while abs(size) >= 1024 and index < len(units) - 1:
        size /= 1024
        index += 1
    return f"{size:.0f} B" if index == 0 else f"{size:.1f} {units[index]}"


def estimate_bytes(sample_sizes: Sequence[int], count: int) -> int:
    """Bytes for ``count`` samples, from the decoded sizes of a few of them (the largest
    quarter weighs in, so a sample of small images does not hide big ones)."""
    if not sample_sizes or count <= 0:
        return 0
    ordered = sorted(sample_sizes)
    mean = sum(ordered) / len(ordered)
    upper = ordered[(3 * len(ordered)) // 4]
    return math.ceil(max(mean, (mean + upper) / 2) * count)


def check_fits(needed: int, available: int, *, source: str, count: int) -> None:
    """:class:`MemoryBudgetError` naming the source when ``needed`` exceeds the budget."""
    budget = int(available * HEADROOM)
    if needed > budget:
        raise MemoryBudgetError(
            f"{source}: preloading {count} images needs about {format_size(needed)} as uint8 "
            f"tensors, but only {format_size(budget)} is free for it; use LazyImageDataset, "
            f"a -tiny variant ({envvars.DATA_DEV.name}=1), or ask for more memory (sbatch --mem)"
        )


def available_memory(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process may still allocate: MemAvailable, capped by its cgroups' limits."""
    meminfo = (proc / "meminfo").read_text()
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    free = int(match.group(1)) * 1024 if match else 0
    limits = [*_cgroup_v2_room(proc, cgroup_root), *_cgroup_v1_room(proc, cgroup_root)]
    return min([free, *limits]) if free else min(limits, default=0)


def _cgroup_lines(proc: Path) -> list[tuple[str, str]]:
    """(controllers, path) of each line of /proc/self/cgroup."""
    try:
        text = (proc / "self" / "cgroup").read_text()
    except FileNotFoundError:
        return []
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found.append((parts[1], parts[2]))
    return found


def _ancestors(root: Path, relative: str) -> list[Path]:
    """The cgroup folder of ``relative`` and every parent up to ``root``."""
    folder = root / relative.strip("/")
    chain = [folder]
    while folder != root and root in folder.parents:
        folder = folder.parent
        chain.append(folder)
    return chain


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, PermissionError, OSError):
        return None
    return int(text) if text.isdigit() else None  # "max" means no limit


def _cgroup_v2_room(proc: Path, root: Path) -> list[int]:
    rooms: list[int] = []
    for controllers, relative in _cgroup_lines(proc):
        if controllers != "":
            continue
        for folder in _ancestors(root, relative):
            limit = _read_number(folder / "memory.max")
            usage = _read_number(folder / "memory.current")
            if limit is not None and usage is not None:
                rooms.append(max(0, limit - usage))
    return rooms


def _cgroup_v1_room(proc: Path, root: Path) -> list[int]:
    rooms: list[int] = []
    for controllers, relative in _cgroup_lines(proc):
        if "memory" not in controllers.split(","):
            continue
        for folder in _ancestors(root / "memory", relative):
            limit = _read_number(folder / "memory.limit_in_bytes")
            usage = _read_number(folder / "memory.usage_in_bytes")
            if limit is not None and usage is not None and limit < 1 << 60:
                rooms.append(max(0, limit - usage))
    return rooms
