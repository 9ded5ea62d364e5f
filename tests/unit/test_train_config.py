"""The engine's settings: validation messages, batch splitting, training progress records."""

from __future__ import annotations

import pytest

from blocktrain.errors import BlocktrainError
from blocktrain.train import EarlyStopping, ExportConfig, TrainConfig, TrainConfigError
from blocktrain.train.state import Progress


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"max_steps": 0}, r"max_steps must be at least 1 \(or null\)"),
        ({"num_workers": -1}, "num_workers must be 0 or more"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm must be a positive number"),
        ({"clip_grad_norm": float("nan")}, "clip_grad_norm must be a positive number"),
        ({"batch_size": 10, "grad_accum_steps": 4}, "not divisible by grad_accum_steps 4"),
        ({"eval_batch_size": 0}, "eval_batch_size must be at least 1"),
        ({"log_flush_seconds": -1.0}, "log_flush_seconds must be 0 or more, got -1.0"),
        ({"poll_every_s": float("inf")}, "poll_every_s must be 0 or more, got inf"),
    ],
)
def test_train_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig(**kwargs)  # pyright: ignore[reportArgumentType]


def test_config_errors_are_both_user_errors_and_value_errors() -> None:
    # ValueError: entry-argument checks report __post_init__ errors of dataclass parameters.
    assert issubclass(TrainConfigError, BlocktrainError)
    assert issubclass(TrainConfigError, ValueError)


def test_micro_batch_splits_the_global_batch() -> None:
    config = TrainConfig(batch_size=64, grad_accum_steps=2)
    assert config.micro_batch(1) == 32
    assert config.micro_batch(4) == 8
    with pytest.raises(
        TrainConfigError, match=r"does not split over 3 rank\(s\) x 2 .* multiple of 6"
    ):
        config.micro_batch(3)
    assert TrainConfig(batch_size=64).eval_micro_batch(4) == 16
    assert TrainConfig(batch_size=2, eval_batch_size=256).eval_micro_batch(4) == 64


def test_early_stopping_and_export_validation() -> None:
    with pytest.raises(TrainConfigError, match="patience must be at least 1"):
        EarlyStopping(patience=0)
    with pytest.raises(TrainConfigError, match="min_delta must be 0 or more"):
        EarlyStopping(min_delta=-1.0)
    with pytest.raises(TrainConfigError, match=r"unknown export format.*tflite; choose from"):
        ExportConfig(formats=("pth", "tflite"))  # pyright: ignore[reportArgumentType]


def test_improves_respects_mode_and_delta() -> None:
    progress = Progress()
    assert progress.improves(5.0, "min")
    assert not progress.improves(float("nan"), "min")
    progress.best = 1.0
    assert progress.improves(0.9, "min")
    assert not progress.improves(1.1, "min")
    assert progress.improves(1.1, "max")
    assert not progress.improves(0.9, "max")
    assert not progress.improves(0.95, "min", min_delta=0.1)
    assert progress.improves(0.85, "min", min_delta=0.1)


def test_progress_round_trip() -> None:
    progress = Progress(epoch=2, step=40, position=3, best=0.5, best_step=32, bad_evals=1)
    progress.record("val_loss", 31, 0.5)
    progress.record("val_loss", 39, 0.6)
    assert Progress.from_dict(progress.to_dict()) == progress
