"""Small real image datasets on disk for the data tests: PNG files in class folders, image and
mask pairs, and the same packed as zip and tar archives."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import torch
from PIL import Image


def image(seed: int, size: tuple[int, int] = (6, 8), channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, *size), dtype=torch.uint8, generator=generator)


def png(tensor: torch.Tensor) -> bytes:
    """PNG bytes of a uint8 (C, H, W) tensor with 1 or 3 channels."""
    pixels = tensor.permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels[:, :, 0] if tensor.shape[0] == 1 else pixels)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def class_folders(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "eel"), per_class: int = 4
) -> dict[str, tuple[torch.Tensor, int]]:
    """ROOT/CLASS/NNN.png; returns member name -> (image, class index)."""
    samples: dict[str, tuple[torch.Tensor, int]] = {}
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            tensor = image(100 * label + number, size=(6 + number, 8))
            member = f"{name}/{number:03d}.png"
            (root / member).write_bytes(png(tensor))
            samples[member] = (tensor, label)
    return samples


def mask_pairs(root: Path, count: int = 5) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """ROOT/images/NNN.png with ROOT/labels/NNN.png (one-channel masks)."""
    samples: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for number in range(count):
        picture, mask = image(number, (8, 8)), image(1000 + number, (8, 8), channels=1) // 128
        (root / "images" / f"{number:03d}.png").write_bytes(png(picture))
        (root / "labels" / f"{number:03d}.png").write_bytes(png(mask))
        samples[f"images/{number:03d}.png"] = (picture, mask)
    return samples


def zip_folder(folder: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return dest


def tar_folder(folder: Path, dest: Path, prefix: str = "") -> Path:
    mode = "w:gz" if dest.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(dest, mode) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.add(path, prefix + path.relative_to(folder).as_posix())
    return dest
