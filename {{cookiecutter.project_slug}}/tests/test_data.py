"""The dataset on disk and through blocktrain's data layer."""

import json
from pathlib import Path

import pytest
import torch
from blocktrain.errors import BlocktrainError

from {{ cookiecutter.package_name }}.data import Data, load
from {{ cookiecutter.package_name }}.generate import generate


def test_generate_writes_images_clips_and_a_description(scratch: Path) -> None:
    generate(output="data/sky", images=8, clips=2, frames=3, size=32)
    root = scratch / "data" / "sky"
    assert sorted(p.name for p in (root / "images").iterdir()) == [
        "aircraft", "bird", "drone", "sky"
    ]  # fmt: skip
    assert len(list((root / "images").rglob("*.png"))) == 8
    assert sorted(p.name for p in (root / "videos").iterdir()) == [
        "clip-000.csv", "clip-000.y4m", "clip-001.csv", "clip-001.y4m"
    ]  # fmt: skip
    labels = (root / "videos" / "clip-000.csv").read_text().splitlines()
    assert labels[0] == "frame,label"
    assert len(labels) == 4
    assert json.loads((root / "dataset.json").read_text())["images_per_class"] == 2


def test_generate_keeps_an_existing_dataset(scratch: Path) -> None:
    generate(output="data/sky", images=4, clips=0, size=16)
    with pytest.raises(BlocktrainError, match="already holds files"):
        generate(output="data/sky", images=4, clips=0, size=16)
    generate(output="data/sky", images=8, clips=0, size=16, overwrite=True)
    assert len(list((scratch / "data" / "sky" / "images").rglob("*.png"))) == 8


def test_load_splits_every_image_once_the_same_way_each_time(scratch: Path) -> None:
    generate(output="data/sky", images=80, clips=0, size=32)
    data = Data(source="data/sky", size=32, val_percent=20, test_percent=20)
    first, second = load(data, log_stats=False), load(data, log_stats=False)
    sizes = [len(first.train), len(first.val), len(first.test)]
    assert sizes == [48, 16, 16]
    assert first.classes == ("aircraft", "bird", "drone", "sky")
    image, target = first.val[0]
    assert image.dtype == torch.float32
    assert image.shape == (3, 32, 32)
    assert target in range(4)
    assert torch.equal(first.test[5][0], second.test[5][0])
    assert len(first.normalization.mean) == 3


def test_bad_split_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="leave room for training"):
        Data(val_percent=60, test_percent=40)
