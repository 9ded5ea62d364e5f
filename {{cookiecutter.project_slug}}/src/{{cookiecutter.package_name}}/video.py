"""Videos as YUV4MPEG2 (``.y4m``): a header line, then raw frames, no codec.

It is the simplest real video format: ffmpeg, mpv and VLC play it, and ffmpeg converts any
video to it (``ffmpeg -i flight.mp4 -pix_fmt yuv444p flight.y4m``). Frames are written in
full-range YCbCr 4:4:4; reading also takes 4:2:0 and monochrome, limited or full range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

MAGIC = b"YUV4MPEG2"
_FRAME = b"FRAME"
# JPEG (full-range BT.601) conversion between RGB and YCbCr.
_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_TO_RGB = np.linalg.inv(_TO_YCBCR)


class VideoError(ValueError):
    """A file that is not a video this module reads."""


@dataclass(frozen=True, slots=True)
class Video:
    """RGB frames (T x H x W x 3, uint8) and the frame rate."""

    frames: NDArray[np.uint8]
    fps: float


def write_y4m(path: Path, frames: NDArray[np.uint8], fps: int = 10) -> None:
    """Write RGB frames (T x H x W x 3, uint8) as a 4:4:4 full-range ``.y4m`` file."""
    count, height, width, _ = frames.shape
    header = f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C444 XCOLORRANGE=FULL\n"
    ycbcr = frames.astype(np.float64) @ _TO_YCBCR.T + np.array([0.0, 128.0, 128.0])
    planes = np.clip(ycbcr + 0.5, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    with path.open("wb") as out:
        out.write(header.encode("ascii"))
        for index in range(count):
            out.write(_FRAME + b"\n")
            out.write(planes[index].tobytes())


def read_y4m(path: Path) -> Video:
    """The frames of a ``.y4m`` file as RGB."""
    data = path.read_bytes()
    line_end = data.find(b"\n")
    fields = data[:line_end].split()
    if line_end < 0 or not fields or fields[0] != MAGIC:
        raise VideoError(f"{path} is not a YUV4MPEG2 (.y4m) video; convert it with ffmpeg")
    header = {field[:1].decode(): field[1:].decode() for field in fields[1:]}
    try:
        width, height = int(header["W"]), int(header["H"])
        numerator, _, denominator = header.get("F", "25:1").partition(":")
        fps = float(numerator) / float(denominator or 1)
    except (KeyError, ValueError, ZeroDivisionError):
        raise VideoError(f"{path}: the header lacks a valid size (W, H) or rate (F)") from None
    chroma = header.get("C", "420jpeg")
    full_range = b"XCOLORRANGE=FULL" in fields
    frames: list[NDArray[np.uint8]] = []
    position = line_end + 1
    plane = width * height
    chroma_plane = _chroma_size(chroma, width, height, path)
    size = plane + 2 * chroma_plane[0] * chroma_plane[1]
    while position < len(data):
        line_end = data.find(b"\n", position)  # FRAME and its parameters
        if not data.startswith(_FRAME, position) or line_end < 0 or line_end + 1 + size > len(data):
            raise VideoError(f"{path} is truncated or damaged after frame {len(frames)}")
        position = line_end + 1
        raw = np.frombuffer(data, np.uint8, size, position)
        position += size
        frames.append(_to_rgb(raw, width, height, chroma_plane, full_range))
    if not frames:
        raise VideoError(f"{path} holds no frames")
    return Video(np.stack(frames), fps)


def _chroma_size(chroma: str, width: int, height: int, path: Path) -> tuple[int, int]:
    """Width and height of each chroma plane (0 x 0 for monochrome)."""
    if chroma.startswith("444"):
        return width, height
    if chroma.startswith("420"):
        return (width + 1) // 2, (height + 1) // 2
    if chroma.startswith("mono"):
        return 0, 0
    raise VideoError(f"{path}: chroma subsampling C{chroma} is not read; use 444 or 420")


def _to_rgb(
    raw: NDArray[np.uint8], width: int, height: int, chroma: tuple[int, int], full_range: bool
) -> NDArray[np.uint8]:
    luma = raw[: width * height].reshape(height, width).astype(np.float64)
    cw, ch = chroma
    if cw == 0:
        cb = cr = np.full((height, width), 128.0)
    else:
        planes = raw[width * height :].reshape(2, ch, cw).astype(np.float64)
        # Nearest-neighbour upsampling of subsampled chroma is enough for classification.
        rows, cols = np.arange(height) * ch // height, np.arange(width) * cw // width
        cb, cr = (p[rows][:, cols] for p in planes)
    if not full_range:  # video levels: Y in 16..235, Cb and Cr in 16..240
        luma = (luma - 16) * 255 / 219
        cb, cr = ((c - 128) * 255 / 224 + 128 for c in (cb, cr))
    ycbcr = np.stack([luma, cb - 128, cr - 128], axis=-1)
    return np.clip(ycbcr @ _TO_RGB.T + 0.5, 0, 255).astype(np.uint8)
