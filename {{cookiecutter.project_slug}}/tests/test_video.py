"""YUV4MPEG2 videos: what is written reads back; other layouts and bad files."""

from pathlib import Path

import numpy as np
import pytest

from {{ cookiecutter.package_name }}.video import VideoError, read_y4m, write_y4m


def test_frames_read_back_within_rounding(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 12, 16, 3), dtype=np.uint8)
    write_y4m(tmp_path / "clip.y4m", frames, fps=12)
    video = read_y4m(tmp_path / "clip.y4m")
    assert video.fps == 12
    assert video.frames.shape == frames.shape
    assert np.abs(video.frames.astype(int) - frames.astype(int)).max() <= 3


def test_limited_range_420_frames_are_read(tmp_path: Path) -> None:
    """A grey 4:2:0 frame in video levels, as ffmpeg writes by default."""
    luma = np.full((4, 6), 126, np.uint8)  # mid grey: 16 + 219 * 0.5
    chroma = np.full((2, 2, 3), 128, np.uint8)
    header = b"YUV4MPEG2 W6 H4 F25:1 Ip A0:0 C420jpeg\n"
    (tmp_path / "grey.y4m").write_bytes(header + b"FRAME\n" + luma.tobytes() + chroma.tobytes())
    video = read_y4m(tmp_path / "grey.y4m")
    assert video.frames.shape == (1, 4, 6, 3)
    assert np.all(np.abs(video.frames.astype(int) - 128) <= 1)


def test_a_truncated_video_is_refused(tmp_path: Path) -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    write_y4m(tmp_path / "clip.y4m", frames)
    data = (tmp_path / "clip.y4m").read_bytes()
    (tmp_path / "cut.y4m").write_bytes(data[:-10])
    with pytest.raises(VideoError, match="truncated or damaged after frame 2"):
        read_y4m(tmp_path / "cut.y4m")


def test_a_file_that_is_not_y4m_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(VideoError, match="not a YUV4MPEG2"):
        read_y4m(tmp_path / "clip.mp4")
