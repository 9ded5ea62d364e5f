"""Decoding members into uint8 image tensors (torchvision.io) and label tensors.

Must not read files or know where members come from: bytes in, tensors out.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Literal

from blocktrain.data.layouts import is_image
from blocktrain.errors import BlocktrainError

if TYPE_CHECKING:
    from torch import Tensor

Mode = Literal["rgb", "gray", "unchanged"]


class DecodeError(BlocktrainError):
    """A member that is not a readable image or label."""


def decode_image(data: bytes, *, name: str, source: str, mode: Mode = "rgb") -> Tensor:
    """A ``uint8`` tensor of shape (C, H, W) from the bytes of an image file (PNG, JPEG, GIF,
    WebP, BMP, TIFF: whatever Pillow reads). "rgb" gives 3 channels, "gray" 1, "unchanged"
    the file's own (a palette image keeps its indices: masks stay class numbers)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    conversions = {"rgb": "RGB", "gray": "L", "unchanged": None}
    if mode not in conversions:
        raise BlocktrainError(
            f"unknown image mode {mode!r}; choose one of {', '.join(conversions)}"
        )
    try:
        with Image.open(io.BytesIO(data)) as opened:
            target = conversions[mode]
            picture = opened.convert(target) if target and opened.mode != target else opened
            pixels = np.asarray(picture)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DecodeError(
            f"{source}: cannot decode {name!r} as an image ({error}); replace or remove it"
        ) from None
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8)
    if pixels.dtype != np.uint8:
        raise DecodeError(
            f"{source}: {name!r} has {pixels.dtype} pixels; store it with 8 bits per channel"
        )
    tensor = torch.tensor(pixels)  # a copy: Pillow's buffer is read-only
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def decode_label(data: bytes, *, name: str, source: str) -> Tensor:
    """A label member as a tensor: a mask image (uint8, C x H x W, as stored), or a text file
    of numbers (one value: a 0-d tensor; rows of values: a 2-d tensor), int64 when every value
    is a whole number, else float32."""
    import torch

    if is_image(name):
        return decode_image(data, name=name, source=source, mode="unchanged")
    try:
        rows = [
            [float(cell) for cell in line.replace(",", " ").split()]
            for line in data.decode("utf-8").splitlines()
            if line.strip()
        ]
    except (UnicodeDecodeError, ValueError):
        raise DecodeError(
            f"{source}: label {name!r} is neither an image nor a text file of numbers; fix it"
        ) from None
    if not rows or len({len(row) for row in rows}) != 1:
        raise DecodeError(
            f"{source}: label {name!r} must hold one number or rows of equal length; fix it"
        )
    whole = all(value.is_integer() for row in rows for value in row)
    dtype = torch.int64 if whole else torch.float32
    if len(rows) == 1 and len(rows[0]) == 1:
        return torch.tensor(rows[0][0], dtype=dtype)
    return torch.tensor(rows, dtype=dtype)
