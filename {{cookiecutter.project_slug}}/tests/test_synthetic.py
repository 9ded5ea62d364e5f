"""The synthetic scenes: shapes, determinism, labels of video frames."""

from dataclasses import replace

import numpy as np
import pytest

from {{ cookiecutter.package_name }} import synthetic


@pytest.mark.parametrize("kind", synthetic.CLASSES)
def test_images_are_rgb_uint8_of_the_asked_size(kind: synthetic.Kind) -> None:
    pixels = synthetic.image(kind, 40, np.random.default_rng(1))
    assert pixels.shape == (40, 40, 3)
    assert pixels.dtype == np.uint8


def test_the_same_seed_draws_the_same_image() -> None:
    first = synthetic.image("drone", 32, np.random.default_rng([3, 2, 1]))
    again = synthetic.image("drone", 32, np.random.default_rng([3, 2, 1]))
    other = synthetic.image("drone", 32, np.random.default_rng([3, 2, 2]))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("kind", ["aircraft", "bird", "drone"])
def test_an_object_darkens_its_scene_and_empty_sky_has_none(kind: synthetic.Kind) -> None:
    scene = synthetic.random_scene(kind, np.random.default_rng(7))
    quiet = replace(scene, noise=0.0, blur=0.0)
    empty = replace(quiet, kind="sky")
    with_object = synthetic.render(quiet, 48, np.random.default_rng(0))
    without = synthetic.render(empty, 48, np.random.default_rng(0))
    changed = np.abs(with_object.astype(int) - without.astype(int)).sum(axis=2) > 30
    assert changed.sum() > 20  # the silhouette covers a good number of pixels
    assert with_object[changed].mean() < without[changed].mean()


def test_a_clip_labels_frames_with_the_object_inside_and_sky_elsewhere() -> None:
    clip = synthetic.clip("bird", 40, 32, np.random.default_rng(5))
    assert clip.frames.shape == (40, 32, 32, 3)
    assert set(clip.labels) == {"bird", "sky"}
    inside = [i for i, label in enumerate(clip.labels) if label == "bird"]
    assert inside == list(range(inside[0], inside[-1] + 1))  # one crossing, no gaps


def test_a_sky_clip_has_only_sky() -> None:
    clip = synthetic.clip("sky", 6, 32, np.random.default_rng(5))
    assert clip.labels == ("sky",) * 6
