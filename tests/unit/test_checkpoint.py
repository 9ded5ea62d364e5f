"""Atomic checkpoints: what survives a crash, what newest_good trusts, pruning, RNG state."""

import hashlib
import multiprocessing
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from blocktrain.errors import BlocktrainError
from blocktrain.train.checkpoint.files import (
    CheckpointConfig,
    best,
    checkpoint_path,
    is_good,
    load,
    mark_best,
    newest_good,
    prune,
    recorded_best,
    remove_leftovers,
    rng_state,
    save,
    set_rng_state,
    sidecar_path,
)


def state(step: int) -> dict[str, object]:
    return {"step": step, "weights": torch.full((3, 4), float(step)), "config": {"lr": 0.1}}


def save_steps(folder: Path, *steps: int) -> list[Path]:
    return [save(state(step), folder, step) for step in steps]


def test_round_trip(tmp_path: Path) -> None:
    path = save(state(7), tmp_path / "ckpt", 7)
    assert path == tmp_path / "ckpt" / "step-000000007.pt"
    loaded = load(path)
    assert loaded["step"] == 7
    assert loaded["config"] == {"lr": 0.1}
    assert torch.equal(loaded["weights"], torch.full((3, 4), 7.0))


def test_sidecar_is_sha256sum_format(tmp_path: Path) -> None:
    path = save(state(1), tmp_path, 1)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sidecar_path(path).read_text() == f"{digest}  {path.name}\n"
    subprocess.run(
        ["sha256sum", "--check", "--quiet", sidecar_path(path).name], cwd=tmp_path, check=True
    )


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    save_steps(tmp_path, 1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000001.pt",
        "step-000000001.pt.sha256",
        "step-000000002.pt",
        "step-000000002.pt.sha256",
    ]


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save({"bad": Unpicklable()}, tmp_path, 3)
    assert list(tmp_path.iterdir()) == []


def test_checksum_covers_every_byte_of_large_tensors(tmp_path: Path) -> None:
    # Records far larger than a file buffer reach the file in writes of their own.
    big = {f"layer{i}": torch.randn(1024, 1024) for i in range(3)}
    path = save(big, tmp_path, 1)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sidecar_path(path).read_text().split()[0] == digest
    loaded = load(path)
    assert all(torch.equal(loaded[k], v) for k, v in big.items())


def test_save_leaves_torchs_crc_setting_as_it_was(tmp_path: Path) -> None:
    from torch.utils.serialization import config

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    save(state(1), tmp_path, 1)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save({"bad": Unpicklable()}, tmp_path, 2)
    assert config.save.compute_crc32 is True


def test_newest_good_takes_the_highest_step(tmp_path: Path) -> None:
    save_steps(tmp_path, 5, 20, 10)
    assert newest_good(tmp_path) == checkpoint_path(tmp_path, 20)


def test_newest_good_skips_a_truncated_file(tmp_path: Path) -> None:
    _, newest = save_steps(tmp_path, 1, 2)
    newest.write_bytes(newest.read_bytes()[:100])
    assert newest_good(tmp_path) == checkpoint_path(tmp_path, 1)


def test_newest_good_skips_a_wrong_checksum(tmp_path: Path) -> None:
    _, newest = save_steps(tmp_path, 1, 2)
    sidecar_path(newest).write_text("0" * 64 + f"  {newest.name}\n")
    assert newest_good(tmp_path) == checkpoint_path(tmp_path, 1)


def test_newest_good_skips_a_missing_sidecar(tmp_path: Path) -> None:
    _, newest = save_steps(tmp_path, 1, 2)
    sidecar_path(newest).unlink()
    assert newest_good(tmp_path) == checkpoint_path(tmp_path, 1)


def test_newest_good_skips_leftovers_and_garbage(tmp_path: Path) -> None:
    save_steps(tmp_path, 1)
    (tmp_path / ".step-000000009.pt.1a2b3c4d.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "step-000000008.pt").write_bytes(b"\x00\xff garbage")
    (tmp_path / "step-000000008.pt.sha256").write_bytes(b"\xff\xfe\x00 not text")
    (tmp_path / "step-000000007.pt").mkdir()
    (tmp_path / "step-000000006.pt.sha256").write_text("")
    (tmp_path / "step-000000006.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    assert newest_good(tmp_path) == checkpoint_path(tmp_path, 1)


def crash_at_the_first_sync(folder: str, what: str) -> None:
    """A save or mark_best that dies (as on power loss) once its first file is written."""

    def die(_fd: int) -> None:
        os._exit(4)

    os.fsync = die  # only in this forked child
    if what == "save":
        save(state(2), Path(folder), 2)
    else:
        mark_best(checkpoint_path(Path(folder), 1), "val_loss", 0.5)


def test_leftovers_of_crashed_writes_are_found_and_removed(tmp_path: Path) -> None:
    save_steps(tmp_path, 1)
    mark_best(checkpoint_path(tmp_path, 1), "val_loss", 0.7)
    context = multiprocessing.get_context("fork")
    for what in ("save", "mark_best"):
        child = context.Process(target=crash_at_the_first_sync, args=(str(tmp_path), what))
        child.start()
        child.join(60)
        assert child.exitcode == 4
    leftovers = sorted(p for p in tmp_path.iterdir() if p.name.startswith("."))
    kinds = sorted(p.name.split(".")[1:-2] for p in leftovers)
    assert kinds == [["best", "json"], ["step-000000002", "pt"], ["step-000000002", "pt", "sha256"]]
    assert newest_good(tmp_path) == best(tmp_path) == checkpoint_path(tmp_path, 1)
    assert sorted(remove_leftovers(tmp_path)) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.json",
        "step-000000001.pt",
        "step-000000001.pt.sha256",
    ]


def test_newest_good_of_nothing(tmp_path: Path) -> None:
    assert newest_good(tmp_path / "missing") is None
    assert newest_good(tmp_path) is None
    (tmp_path / "a-file").write_text("x")
    assert newest_good(tmp_path / "a-file") is None


def test_load_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = save(state(4), tmp_path, 4)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not is_good(path)
    with pytest.raises(BlocktrainError, match=r"step-000000004\.pt does not match the checksum"):
        load(path)


def test_load_refuses_a_file_without_checksum(tmp_path: Path) -> None:
    path = save(state(4), tmp_path, 4)
    sidecar_path(path).unlink()
    with pytest.raises(BlocktrainError, match=r"has no checksum file step-000000004\.pt\.sha256"):
        load(path)


def test_load_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = save({"when": Path("/x")}, tmp_path, 1)
    with pytest.raises(Exception, match="weights_only"):
        load(path)
    assert load(path, weights_only=False) == {"when": Path("/x")}


def test_saving_a_step_again_replaces_it(tmp_path: Path) -> None:
    save(state(1), tmp_path, 3)
    save(state(2), tmp_path, 3)
    assert load(checkpoint_path(tmp_path, 3))["step"] == 2


def test_prune_keeps_the_last_k_and_the_kept(tmp_path: Path) -> None:
    paths = save_steps(tmp_path, 1, 2, 3, 4, 5, 6)
    removed = prune(tmp_path, keep_last=2, keep=[paths[1]])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000002.pt",
        "step-000000002.pt.sha256",
        "step-000000005.pt",
        "step-000000005.pt.sha256",
        "step-000000006.pt",
        "step-000000006.pt.sha256",
    ]
    assert len(removed) == 6
    assert newest_good(tmp_path) == paths[-1]


def test_prune_counts_only_complete_checkpoints(tmp_path: Path) -> None:
    paths = save_steps(tmp_path, 1, 2, 3)
    sidecar_path(paths[2]).unlink()  # step 3 was never completely saved
    (tmp_path / "step-000000000.pt.sha256").write_text("orphan")
    prune(tmp_path, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000002.pt",
        "step-000000002.pt.sha256",
        "step-000000003.pt",
    ]


def test_prune_with_fewer_than_k_removes_nothing(tmp_path: Path) -> None:
    save_steps(tmp_path, 1, 2)
    assert prune(tmp_path, keep_last=3) == []
    assert prune(tmp_path / "missing", keep_last=3) == []
    assert len(list(tmp_path.iterdir())) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "every_steps or every_minutes"),
        ({"every_steps": 0}, "every_steps must be a positive integer, got 0"),
        ({"every_minutes": -1.0}, "every_minutes must be a positive number, got -1.0"),
        ({"every_minutes": float("nan")}, "every_minutes must be a positive number"),
        ({"every_steps": 10, "keep_last": 0}, "keep_last must be at least 1"),
    ],
)
def test_config_validation(tmp_path: Path, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CheckpointConfig(folder=tmp_path, **kwargs)  # pyright: ignore[reportArgumentType]


def test_due_by_steps(tmp_path: Path) -> None:
    config = CheckpointConfig(folder=tmp_path, every_steps=100)
    assert not config.due(99, 0, 0.0, 1e9)
    assert config.due(100, 0, 0.0, 0.0)
    assert not config.due(150, 100, 0.0, 0.0)
    assert config.due(200, 100, 0.0, 0.0)
    assert not config.due(100, 100, 0.0, 1e9)


def test_due_by_minutes(tmp_path: Path) -> None:
    config = CheckpointConfig(folder=tmp_path, every_minutes=30)
    assert not config.due(10, 0, 1000.0, 1000.0 + 29 * 60)
    assert config.due(10, 0, 1000.0, 1000.0 + 30 * 60)
    assert not config.due(0, 0, 1000.0, 1e9)  # nothing new since the last save


def test_due_by_either(tmp_path: Path) -> None:
    config = CheckpointConfig(folder=tmp_path, every_steps=100, every_minutes=10)
    assert config.due(100, 0, 0.0, 1.0)
    assert config.due(5, 0, 0.0, 600.0)
    assert not config.due(5, 0, 0.0, 599.0)


def draws() -> tuple[float, float, list[float]]:
    """One number from each global generator (S311: their state is what is under test)."""
    python = random.random()
    return python, float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    draws()
    path = save({"rng": rng_state()}, tmp_path, 1)
    expected = draws()
    draws()  # move on, as the rest of a crashed run would
    set_rng_state(load(path)["rng"])  # weights_only loading copes with every part
    assert draws() == expected


def test_rng_state_has_the_expected_parts() -> None:
    parts = set(rng_state())
    assert {"python", "numpy", "torch"} <= parts
    assert ("cuda" in parts) == torch.cuda.is_available()


def test_recorded_best_names_the_file_without_reading_it(tmp_path: Path) -> None:
    path = save(state(1), tmp_path, 1)
    mark_best(path, "val_loss", 0.5)
    path.write_bytes(b"torn")
    assert best(tmp_path) is None
    assert recorded_best(tmp_path) == path
    (tmp_path / "best.json").write_text('{"file": "../elsewhere.pt"}')
    assert recorded_best(tmp_path) is None
