"""Image datasets from folders and archives: layouts and their mismatch errors, lazy and
preloaded kinds, v2 transforms on uint8, DataLoader workers, statistics, tensor caches."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from blocktrain.data.augment import eval_transforms, train_transforms
from blocktrain.data.datasets import InMemoryImageDataset, LazyImageDataset
from blocktrain.data.images import DecodeError, decode_label
from blocktrain.data.layouts import LabelMismatchError, Layout, build_index
from blocktrain.data.splits import split_indices
from blocktrain.data.stats import channel_stats, dataset_stats, log_dataset_stats, stats_params
from blocktrain.data.tensorcache import (
    TensorCacheError,
    build_tensor_cache,
    load_tensor_cache,
    tensor_cache,
)
from blocktrain.errors import BlocktrainError
from data_samples import class_folders, image, mask_pairs, png, tar_folder, zip_folder

KINDS = [LazyImageDataset, InMemoryImageDataset]


def no_read(name: str) -> bytes:
    raise AssertionError(f"read {name}")


def test_folders_layout_index():
    names = ["top/dog/1.png", "top/cat/2.jpg", "top/cat/sub/3.png", "top/README.md", "x.png"]
    index = build_index(names, Layout(root="top"), "src", no_read)
    assert index.classes == ("cat", "dog")
    assert index.images == ("top/cat/2.jpg", "top/cat/sub/3.png", "top/dog/1.png")
    assert index.targets == (0, 0, 1)
    with pytest.raises(LabelMismatchError, match=r"^src: image 'x.png' is not inside a class"):
        build_index(names, Layout(), "src", no_read)
    with pytest.raises(LabelMismatchError, match=r"^src/nothing: no images"):
        build_index(names, Layout(root="nothing"), "src", no_read)


def test_pairs_layout_mismatch_names_the_files():
    names = ["images/a.png", "images/b.png", "images/c.png", "labels/a.png", "labels/z.txt"]
    with pytest.raises(LabelMismatchError) as caught:
        build_index(names, Layout(kind="pairs"), "s3://b/ds", no_read)
    assert str(caught.value) == (
        "s3://b/ds: 2 images have no label (e.g. images/b.png, images/c.png) and 1 labels have "
        "no image (e.g. labels/z.txt); every images/NAME.* needs labels/NAME.* and the other "
        "way round"
    )
    with pytest.raises(LabelMismatchError, match="share the name 'a'"):
        build_index(["images/a.png", "images/a.jpg"], Layout(kind="pairs"), "src", no_read)


def test_csv_layout_and_its_mismatches():
    names = ["d/labels.csv", "d/x/1.png", "d/2.png"]

    def index(text: str):
        return build_index(names, Layout(kind="csv", root="d"), "src", lambda _: text.encode())

    built = index("image,label\nx/1.png,bird\n2.png,ant\n")
    assert built.images == ("d/2.png", "d/x/1.png")
    assert built.classes == ("ant", "bird")
    assert built.targets == (0, 1)
    with pytest.raises(LabelMismatchError, match=r"^src/d/labels.csv: 1 images are not listed"):
        index("image,label\nx/1.png,bird\n")
    with pytest.raises(LabelMismatchError, match=r"^src/d/labels.csv:3: image '3.png' does not"):
        index("image,label\nx/1.png,bird\n3.png,ant\n2.png,ant\n")
    with pytest.raises(LabelMismatchError, match=r"labels.csv:3: '2.png' is listed twice"):
        index("image,label\n2.png,bird\n2.png,ant\nx/1.png,a\n")
    with pytest.raises(LabelMismatchError, match="header 'image,label'"):
        index("file,class\n")
    with pytest.raises(BlocktrainError, match="unknown layout 'coco'; choose one of folders"):
        Layout(kind="coco")  # pyright: ignore[reportArgumentType]


@pytest.fixture
def animals(tmp_path: Path) -> tuple[Path, dict[str, tuple[torch.Tensor, int]]]:
    samples = class_folders(tmp_path / "animals")
    return tmp_path / "animals", samples


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("packing", ["folder", "zip", "tar", "tar.gz"])
def test_both_kinds_read_the_same_items(animals, kind, packing, tmp_path: Path):
    folder, samples = animals
    source = {
        "folder": lambda: folder,
        "zip": lambda: zip_folder(folder, tmp_path / "a.zip", prefix="animals/"),
        "tar": lambda: tar_folder(folder, tmp_path / "a.tar", prefix="animals/"),
        "tar.gz": lambda: tar_folder(folder, tmp_path / "a.tar.gz", prefix="animals/"),
    }[packing]()
    layout = Layout() if packing == "folder" else Layout(root="animals")
    dataset = kind(source, layout=layout)
    assert len(dataset) == len(samples)
    assert dataset.classes == ("cat", "dog", "eel")
    for index in range(len(dataset)):
        key = dataset.keys[index].removeprefix("animals/")
        picture, label = dataset[index]
        assert picture.dtype == torch.uint8
        assert torch.equal(picture, samples[key][0])
        assert label == samples[key][1]
        assert dataset.targets is not None
        assert dataset.targets[index] == label


def test_gray_mode_and_decode_errors(tmp_path: Path):
    (tmp_path / "ds" / "a").mkdir(parents=True)
    (tmp_path / "ds" / "a" / "1.png").write_bytes(png(image(1)))
    (tmp_path / "ds" / "a" / "2.png").write_bytes(b"not really a png")
    dataset = LazyImageDataset(tmp_path / "ds", mode="gray")
    assert dataset[0][0].shape == (1, 6, 8)
    with pytest.raises(DecodeError, match=rf"^{tmp_path}/ds: cannot decode 'a/2.png' as an image"):
        dataset[1]
    with pytest.raises(DecodeError, match=r"cannot decode 'a/2\.png'"):
        InMemoryImageDataset(tmp_path / "ds")


@pytest.mark.parametrize("kind", KINDS)
def test_masks_are_transformed_with_their_images(tmp_path: Path, kind):
    samples = mask_pairs(tmp_path / "seg")
    flip = v2.RandomHorizontalFlip(p=1.0)
    dataset = kind(tmp_path / "seg", layout="pairs", transform=flip)
    for index, key in enumerate(dataset.keys):
        picture, mask = dataset[index]
        assert torch.equal(picture, samples[key][0].flip(-1))
        assert torch.equal(mask, samples[key][1].flip(-1))
    assert dataset.classes == ()
    assert dataset.targets is None


def test_text_labels():
    assert decode_label(b"3\n", name="l/a.txt", source="s").item() == 3
    boxes = decode_label(b"0 0.5 0.5 0.1 0.2\n1 0.1 0.2 0.3 0.4\n", name="a.txt", source="s")
    assert boxes.shape == (2, 5)
    assert boxes.dtype == torch.float32
    with pytest.raises(DecodeError, match="rows of equal length"):
        decode_label(b"1 2\n3\n", name="a.txt", source="s")


def test_augmentations_on_uint8_and_a_dataloader_with_workers(tmp_path: Path, animals):
    folder, _ = animals
    zip_folder(folder, tmp_path / "a.zip")
    transform = train_transforms(4, mean=[0.5] * 3, std=[0.25] * 3)
    dataset = LazyImageDataset(tmp_path / "a.zip", transform=transform)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert sum(len(labels) for _, labels in batches) == len(dataset)
    assert batches[0][0].shape == (4, 3, 4, 4)
    assert batches[0][0].dtype == torch.float32
    evaluated = eval_transforms(4, mean=[0.5] * 3, std=[0.25] * 3)(dataset.image(0))
    assert evaluated.shape == (3, 4, 4)


def test_statistics_of_a_split(animals):
    folder, samples = animals
    dataset = InMemoryImageDataset(folder)
    parts = split_indices(dataset.keys, {"train": 50, "val": 25, "test": 25})
    stats = dataset_stats(dataset, parts)
    assert stats.counts == {name: len(indices) for name, indices in parts.items()}
    assert sum(sum(c.values()) for c in stats.class_counts.values()) == len(samples)
    train = [dataset.image(i) for i in parts["train"]]
    pixels = torch.cat([t.flatten(1).double() / 255 for t in train], dim=1)
    assert stats.mean == pytest.approx(pixels.mean(1).tolist())
    assert stats.std == pytest.approx(pixels.std(1, correction=0).tolist())
    params = stats_params(stats)
    assert params["data.train.count"] == str(len(parts["train"]))
    assert params["data.num_classes"] == "3"
    assert params["data.stats_split"] == "train"
    assert len(eval(params["data.mean"])) == 3  # noqa: S307 - a JSON list of numbers
    assert log_dataset_stats(stats) == params  # no tracked run here: returned, not logged
    with pytest.raises(BlocktrainError, match="channels"):
        channel_stats([image(1), image(2, channels=1)])
    assert channel_stats([]) == ((), ())
    assert all(math.isfinite(v) for v in stats.std)


def test_tensor_cache_builds_once_and_reloads(tmp_path: Path, animals):
    folder, samples = animals
    built: list[int] = []

    def build() -> LazyImageDataset:
        built.append(1)
        return LazyImageDataset(folder)

    resize = v2.Resize((5, 5), antialias=True)
    path = tmp_path / "cache" / "animals.pt"
    first = tensor_cache(path, build, key="animals|5x5", preprocess=resize)
    again = tensor_cache(path, build, key="animals|5x5", preprocess=resize)
    assert built == [1]
    assert first.images.shape == (len(samples), 3, 5, 5)
    assert first.images.dtype == torch.uint8
    assert torch.equal(first.images, again.images)
    assert again.classes == ("cat", "dog", "eel")
    assert [again[i][1] for i in range(len(again))] == [samples[k][1] for k in again.keys]
    tensor_cache(path, build, key="animals|6x6", preprocess=v2.Resize((6, 6), antialias=True))
    assert built == [1, 1]
    with pytest.raises(TensorCacheError, match=r"was built for 'animals\|6x6', not 'other'"):
        load_tensor_cache(path, key="other")
    with pytest.raises(TensorCacheError, match="has shape"):
        build_tensor_cache(LazyImageDataset(folder), tmp_path / "bad.pt", key="k")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(TensorCacheError, match="cannot read"):
        load_tensor_cache(tmp_path / "junk.pt")


def test_zip_members_with_a_single_top_folder(tmp_path: Path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("set/a/1.png", png(image(3)))
        archive.writestr("set/b/2.png", png(image(4)))
    (tmp_path / "set.zip").write_bytes(buffer.getvalue())
    dataset = LazyImageDataset(tmp_path / "set.zip", layout=Layout(root="set"))
    assert dataset.classes == ("a", "b")
    assert torch.equal(dataset[1][0], image(4))
