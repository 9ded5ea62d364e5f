"""The training loop in one process: learning, accumulation, clipping, schedules, early
stopping, seeds, checkpoint contents, and exact resume after the restart protocol stops it."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from trainkit import TinyNet, blobs, digest

from blocktrain import restart
from blocktrain.errors import BlocktrainError, RequeueRequested
from blocktrain.restart import RestartConfig
from blocktrain.train import EarlyStopping, TrainConfig, Trainer, accuracy
from blocktrain.train.checkpoint import files as checkpoint
from blocktrain.train.checkpoint import saver as checkpoint_saver
from blocktrain.train.checkpoint.files import CheckpointConfig

TRAIN = blobs(48, seed=1)
VAL = blobs(30, seed=2)


def make_trainer(
    folder: Path | None = None,
    *,
    stop_at: int | None = None,
    scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
    dropout: float = 0.2,
    lr: float = 0.1,
    momentum: float = 0.9,
    every_steps: int = 5,
    **config: Any,
) -> Trainer:
    """A trainer of TinyNet; ``stop_at``: signal the restart protocol in that loss call."""
    model = TinyNet(dropout=dropout)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    calls = 0

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        if outputs.requires_grad:  # training, not evaluation
            calls += 1
            if calls == stop_at:
                signal.raise_signal(signal.SIGUSR2)
        return nn.functional.cross_entropy(outputs, targets)

    settings = {"epochs": 3, "batch_size": 8, "log_every_steps": 4, **config}
    return Trainer(
        model,
        optimizer,
        loss_fn,
        config=TrainConfig(**settings),  # pyright: ignore[reportArgumentType]
        scheduler=scheduler(optimizer) if scheduler else None,  # pyright: ignore[reportArgumentType]
        metrics={"accuracy": accuracy},
        checkpoint=CheckpointConfig(folder=folder, every_steps=every_steps) if folder else None,
        args={"note": "test"},
    )


def protocol(tmp_path: Path) -> restart.RestartConfig:
    return RestartConfig(run_dir=tmp_path / "run", marker_dir=tmp_path / "markers", job_key="job")


def step_lr(optimizer: torch.optim.Optimizer) -> object:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.7)


def test_fit_learns_and_reports_metrics_in_order(tmp_path: Path) -> None:
    trainer = make_trainer(dropout=0.0, epochs=6)
    values = trainer.fit(TRAIN, VAL)
    assert list(values) == ["val_accuracy", "val_loss"]  # accuracy first: slurm-status shows it
    assert values["val_accuracy"] > 0.8
    history = trainer.progress.history
    assert history["val_loss"][-1][1] < history["val_loss"][0][1]
    assert [step for step, _ in history["val_loss"]] == [5, 11, 17, 23, 29, 35]
    assert trainer.progress.step == 36
    assert trainer.progress.epoch == 6


def test_same_seed_same_bits_other_seed_other_bits() -> None:
    first, second, other = (make_trainer(seed=s) for s in (3, 3, 4))
    for trainer in (first, second, other):
        trainer.fit(TRAIN)
    assert digest(first.model) == digest(second.model)
    assert digest(first.model) != digest(other.model)


def test_accumulation_matches_the_same_global_batch() -> None:
    whole = make_trainer(dropout=0.0, batch_size=8)
    halves = make_trainer(dropout=0.0, batch_size=8, grad_accum_steps=2)
    whole.fit(TRAIN)
    halves.fit(TRAIN)
    assert halves.progress.step == whole.progress.step == 18
    for a, b in zip(whole.model.parameters(), halves.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_clipping_bounds_the_update() -> None:
    trainer = make_trainer(dropout=0.0, lr=1.0, momentum=0.0, max_steps=1, clip_grad_norm=1e-3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit(TRAIN)
    moved = torch.cat(
        [(p - b).flatten() for p, b in zip(trainer.model.parameters(), before, strict=True)]
    )
    assert 0 < moved.norm() <= 1e-3 * (1 + 1e-4)


@pytest.mark.parametrize(("interval", "expected_steps"), [("step", 18), ("epoch", 3)])
def test_scheduler_interval(interval: str, expected_steps: int) -> None:
    def halve_each(optimizer: torch.optim.Optimizer) -> object:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    trainer = make_trainer(scheduler=halve_each, scheduler_interval=interval)
    trainer.fit(TRAIN)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**expected_steps)


def test_plateau_scheduler_follows_the_monitored_metric() -> None:
    def plateau(optimizer: torch.optim.Optimizer) -> object:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)

    trainer = make_trainer(scheduler=plateau, lr=1e-6, epochs=3)  # val_loss stays flat
    trainer.fit(TRAIN, VAL)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6 * 0.5**2)


def test_early_stopping_after_patience_evaluations() -> None:
    trainer = make_trainer(lr=0.0, epochs=20, early_stopping=EarlyStopping(patience=2))
    trainer.fit(TRAIN, VAL)
    # The first evaluation sets the best; two more without improvement end the training.
    assert trainer.progress.epoch == 3
    assert trainer.progress.bad_evals == 2


def test_max_steps_stops_mid_epoch_and_evaluates(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "ckpt", max_steps=8, epochs=5)
    values = trainer.fit(TRAIN, VAL)
    assert (trainer.progress.step, trainer.progress.epoch, trainer.progress.position) == (8, 1, 2)
    assert set(values) == {"val_accuracy", "val_loss"}
    assert checkpoint.newest_good(tmp_path / "ckpt") == checkpoint.checkpoint_path(
        tmp_path / "ckpt", 8
    )


def test_checkpoint_contents(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    trainer = make_trainer(folder, scheduler=step_lr, every_steps=4, max_steps=8)
    trainer.fit(TRAIN, VAL)
    state = checkpoint.load(checkpoint.checkpoint_path(folder, 8))
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "progress", "config", "args"}
    assert state["model"].keys() == trainer.model.state_dict().keys()
    assert state["progress"]["epoch"] == 1
    assert state["progress"]["position"] == 2
    assert state["progress"]["step"] == 8
    assert state["args"] == {"note": "test"}
    assert state["config"]["train"]["batch_size"] == 8
    assert state["config"]["checkpoint"]["every_steps"] == 4
    assert {"python", "numpy", "torch"} <= set(state["rng"][0])
    assert state["scheduler"]["last_epoch"] == 8


def test_keeps_the_last_k_and_the_best(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    trainer = make_trainer(folder, every_steps=2, epochs=4)
    trainer.fit(TRAIN, VAL)
    best = checkpoint.best(folder)
    assert best is not None
    assert checkpoint.load(best)["progress"]["best"] == trainer.progress.best
    steps = sorted(int(p.name[5:14]) for p in folder.glob("step-*.pt"))
    assert steps[-3:] == [20, 22, 24]
    assert len(steps) <= 4
    assert best.name in {f"step-{s:09d}.pt" for s in steps}


def test_compiled_model_saves_bare_names(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "ckpt", compile=True)
    assert all(key.startswith("_orig_mod.") for key in trainer.net.state_dict())
    assert trainer.state_dict()["model"].keys() == TinyNet().state_dict().keys()


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(BlocktrainError, match="fp16 needs a GPU"):
        make_trainer(precision="fp16")


def test_unknown_monitor_names_the_choices() -> None:
    trainer = make_trainer(monitor="val_f1")
    with pytest.raises(
        BlocktrainError,
        match="'val_f1' is not a validation metric; choose one of val_accuracy, val_loss",
    ):
        trainer.fit(TRAIN, VAL)


def test_a_failed_background_write_is_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should be")
    trainer = make_trainer(blocker, every_steps=2)
    with pytest.raises(BlocktrainError, match="checkpoint of step 2 could not be written"):
        trainer.fit(TRAIN)


def test_async_save_keeps_the_state_of_its_step(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "ckpt")
    assert trainer.checkpointer is not None
    expected = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.checkpointer.save(trainer.state_dict(), 1)
    with torch.no_grad():  # training goes on while the thread writes
        for parameter in trainer.model.parameters():
            parameter.add_(1.0)
    trainer.checkpointer.close()
    saved = checkpoint.load(checkpoint.checkpoint_path(tmp_path / "ckpt", 1))["model"]
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_late_copies_wait_for_before_update(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "ckpt")
    saver = trainer.checkpointer
    assert saver is not None
    expected = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    late = frozenset(checkpoint_saver.storage_address(p) for p in trainer.model.parameters())
    saver.save(trainer.state_dict(), 1, late=late)
    saver.before_update()  # the copies are done: changes from here on are not saved
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(1.0)
    saver.close()
    saved = checkpoint.load(checkpoint.checkpoint_path(tmp_path / "ckpt", 1))["model"]
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_every_async_checkpoint_holds_its_own_step(tmp_path: Path) -> None:
    """Checkpoints written in the background while training goes on (their parameters and
    momentum copied during the next step) equal a training stopped at that step."""
    folder = tmp_path / "async"
    make_trainer(folder, every_steps=2, dropout=0.0).fit(TRAIN)
    for step in (14, 16):  # kept (keep_last 3: 14, 16, 18), written in the background
        reference = make_trainer(dropout=0.0, max_steps=step)
        reference.fit(TRAIN)
        saved = checkpoint.load(checkpoint.checkpoint_path(folder, step))
        model = reference.model.state_dict()
        assert all(torch.equal(saved["model"][k], model[k]) for k in model), step
        momentum = reference.optimizer.state_dict()["state"]
        for index, values in momentum.items():
            assert torch.equal(saved["optimizer"]["state"][index]["momentum_buffer"],
                               values["momentum_buffer"]), step  # fmt: skip


# ---- exact resume -------------------------------------------------------------------------


def uninterrupted(tmp_path: Path, **config: Any) -> Trainer:
    trainer = make_trainer(tmp_path / "full", scheduler=step_lr, **config)
    trainer.fit(TRAIN, VAL)
    return trainer


def interrupted(tmp_path: Path, stop_at: int, **config: Any) -> Path:
    folder = tmp_path / "cut"
    trainer = make_trainer(folder, scheduler=step_lr, stop_at=stop_at, **config)
    with restart.protocol(protocol(tmp_path)), pytest.raises(RequeueRequested):
        trainer.fit(TRAIN, VAL)
    return folder


def resumed(folder: Path, **config: Any) -> Trainer:
    trainer = make_trainer(folder, scheduler=step_lr, **config)
    trainer.fit(TRAIN, VAL)
    return trainer


@pytest.mark.parametrize(
    ("stop_at", "config", "stopped_after"),
    [
        (4, {}, 4),  # mid-epoch
        (6, {}, 6),  # last step of an epoch, before its evaluation
        (13, {}, 13),  # mid-epoch, after a best checkpoint
        (7, {"grad_accum_steps": 2}, 4),  # signalled in the first half of an accumulated step
    ],
)
def test_exact_resume(
    tmp_path: Path, stop_at: int, config: dict[str, Any], stopped_after: int
) -> None:
    expected = uninterrupted(tmp_path, **config)
    folder = interrupted(tmp_path, stop_at, **config)
    assert checkpoint.newest_good(folder) == checkpoint.checkpoint_path(folder, stopped_after)
    assert (tmp_path / "markers" / "job").exists()  # the requeue was asked for
    trainer = resumed(folder, **config)
    assert trainer.progress.step == 18
    assert digest(trainer.model) == digest(expected.model)
    # The curves too: every point averages the same steps (log every 4 steps, stops between).
    assert trainer.progress.history == expected.progress.history


def test_resume_after_a_crash_mid_write(tmp_path: Path) -> None:
    expected = uninterrupted(tmp_path)
    folder = interrupted(tmp_path, 9)
    newest = checkpoint.checkpoint_path(folder, 9)
    assert checkpoint.newest_good(folder) == newest
    # A crash while writing the next one: a torn file without checksum, a temporary file.
    torn = checkpoint.checkpoint_path(folder, 11)
    torn.write_bytes(newest.read_bytes()[:1000])
    leftover = folder / ".step-000000012.pt.0123abcd.tmp"
    leftover.write_bytes(b"partial")
    trainer = resumed(folder)
    assert not leftover.exists()
    assert digest(trainer.model) == digest(expected.model)


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    make_trainer(folder, max_steps=2).fit(TRAIN)
    other = Trainer(
        nn.Linear(36, 3),
        torch.optim.SGD(nn.Linear(36, 3).parameters(), lr=0.1),
        nn.functional.cross_entropy,
        checkpoint=CheckpointConfig(folder=folder, every_steps=5),
    )
    with pytest.raises(BlocktrainError, match=r"step-000000002\.pt does not fit this training"):
        other.fit(TRAIN)


class RecordingTracker:
    """Stands in for the MLflow tracker: records what would be uploaded (the real upload is
    tested against a real run in tests/integration/train)."""

    def __init__(self) -> None:
        self.uploads: list[tuple[Path, str]] = []

    def log_artifacts(self, local_path: Path, artifact_path: str = "") -> None:
        self.uploads.append((Path(local_path), artifact_path))


def test_uploads_stage_hard_links_and_keep_two_per_kind(tmp_path: Path) -> None:
    from blocktrain.train.checkpoint.saver import Best, Checkpointer

    folder = tmp_path / "ckpt"
    tracker = RecordingTracker()
    saver = Checkpointer(
        CheckpointConfig(folder=folder, every_steps=1),
        writer=True,
        tracker=tracker,  # pyright: ignore[reportArgumentType]
    )
    for step in range(1, 5):
        saver.save({"step": step}, step, best=Best("val_loss", 1.0 / step) if step % 2 else None)
    saver.close()
    staged = sorted(p.name.split("-")[0] for p in (folder / "upload").iterdir())
    assert staged == ["best", "best", "last", "last"]
    assert len({path for path, _ in tracker.uploads}) == len(tracker.uploads) == 6  # distinct
    newest, where = tracker.uploads[-1]
    assert where == "checkpoints/last"
    assert (newest / "last.pt").stat().st_ino == checkpoint.checkpoint_path(folder, 4).stat().st_ino
    subprocess.run(["sha256sum", "--check", "--quiet", "last.pt.sha256"], cwd=newest, check=True)


# ---- loud fallbacks -----------------------------------------------------------------------


def _tear(path: Path) -> None:
    """A checkpoint cut short under its final name (a full disk, a file system's crash)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_torn_newest_checkpoint_is_named_and_the_run_resumes_from_the_one_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = interrupted(tmp_path, 13)  # checkpoints at steps 5, 10, the best ones and 13
    newest = checkpoint.checkpoint_path(folder, 13)
    assert checkpoint.newest_good(folder) == newest
    _tear(newest)
    with caplog.at_level("WARNING", logger="blocktrain.train"):
        trainer = resumed(folder)
    assert trainer.progress.step == 18
    [warning] = [r.getMessage() for r in caplog.records if "skipped checkpoint" in r.getMessage()]
    assert str(newest) in warning
    assert "does not match the checksum" in warning


def test_a_run_whose_every_checkpoint_is_torn_does_not_train_from_zero_again(
    tmp_path: Path,
) -> None:
    folder = interrupted(tmp_path, 13)
    for path in folder.glob("*.pt"):
        _tear(path)
    assert checkpoint.newest_good(folder) is None
    trainer = make_trainer(folder, scheduler=step_lr)
    with pytest.raises(
        BlocktrainError, match=r"no checkpoint in .* can be loaded .*start a new run"
    ):
        trainer.fit(TRAIN, VAL)
    assert trainer.progress.step == 0
