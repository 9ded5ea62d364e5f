"""Memory estimates for preloaded datasets, the limits of /proc and cgroups, and the error
when a dataset will not fit."""

from pathlib import Path

import pytest

from blocktrain.data.datasets import InMemoryImageDataset
from blocktrain.data.memory import (
    MemoryBudgetError,
    available_memory,
    check_fits,
    estimate_bytes,
    format_size,
)
from data_samples import class_folders

GIB = 1 << 30


def test_estimate_weighs_the_larger_samples():
    assert estimate_bytes([100, 100, 100, 100], 1000) == 100_000
    assert estimate_bytes([], 1000) == 0
    skewed = estimate_bytes([10, 10, 10, 1000], 100)
    assert skewed > 100 * (1030 / 4)  # more than the mean: the big quarter counts


def test_check_fits_names_the_source_and_the_ways_out():
    check_fits(8 * GIB, 10 * GIB, source="s3://b/ds", count=10)
    with pytest.raises(MemoryBudgetError) as caught:
        check_fits(12 * GIB, 10 * GIB, source="s3://b/ds", count=50000)
    message = str(caught.value)
    assert message.startswith("s3://b/ds: preloading 50000 images needs about 12.0 GiB")
    assert "only 9.0 GiB is free" in message
    assert "LazyImageDataset" in message
    assert "--mem" in message
    assert format_size(1536) == "1.5 KiB"
    assert format_size(12) == "12 B"


def fake_system(
    tmp_path: Path, cgroup: str, files: dict[str, str], available_kib: int
) -> tuple[Path, Path]:
    proc, sys_root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {available_kib} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    for name, text in files.items():
        (sys_root / name).parent.mkdir(parents=True, exist_ok=True)
        (sys_root / name).write_text(text)
    return proc, sys_root


def test_cgroup_v2_limit_of_a_parent_counts(tmp_path: Path):
    proc, root = fake_system(
        tmp_path,
        "0::/job_7/step_0/task_0\n",
        {
            "job_7/memory.max": str(4 * GIB),
            "job_7/memory.current": str(1 * GIB),
            "job_7/step_0/memory.max": "max",
            "job_7/step_0/memory.current": str(1 * GIB),
            "job_7/step_0/task_0/memory.max": "max",
            "job_7/step_0/task_0/memory.current": str(GIB),
        },
        available_kib=64 * 1024 * 1024,
    )
    assert available_memory(proc, root) == 3 * GIB


def test_cgroup_v1_and_machine_memory(tmp_path: Path):
    proc, root = fake_system(
        tmp_path,
        "4:memory:/slurm/uid_0/job_9\n1:cpu:/\n",
        {
            "memory/slurm/uid_0/job_9/memory.limit_in_bytes": str(8 * GIB),
            "memory/slurm/uid_0/job_9/memory.usage_in_bytes": str(2 * GIB),
            "memory/memory.limit_in_bytes": str(2**63 - 4096),  # "unlimited"
            "memory/memory.usage_in_bytes": str(GIB),
        },
        available_kib=5 * 1024 * 1024,
    )
    assert available_memory(proc, root) == 5 * GIB  # the machine has less than the job may use


def test_preloading_stops_before_loading_when_it_will_not_fit(tmp_path: Path):
    class_folders(tmp_path / "ds", per_class=6)
    dataset = InMemoryImageDataset(tmp_path / "ds")
    needed = dataset.nbytes
    with pytest.raises(
        MemoryBudgetError, match=rf"^{tmp_path}/ds: preloading 18 images needs about"
    ):
        InMemoryImageDataset(tmp_path / "ds", max_bytes=needed // 2)
    assert len(InMemoryImageDataset(tmp_path / "ds", max_bytes=needed * 2)) == 18
