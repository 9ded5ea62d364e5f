"""Synthetic sky scenes: drones, birds, aircraft and empty sky, as images and video clips.

A scene is a sky (a vertical gradient: clear, overcast or dusk, brighter or darker), a few
soft clouds and, except for empty sky, one silhouette at some size, position and angle. It
is rendered with blur, sensor noise and a lighting change. Silhouettes are drawn at
``SUPERSAMPLE`` times the output size and averaged down, so their edges are anti-aliased.

A clip moves one object along a straight line through a fixed scene; each frame's label is
the object's class while its centre is inside the frame, else ``sky``.

Pure: numpy and Pillow in, arrays out; writing files is :mod:`generate`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

Kind = Literal["aircraft", "bird", "drone", "sky"]
CLASSES: tuple[Kind, ...] = ("aircraft", "bird", "drone", "sky")
"""Class names in the order the folders layout sorts them (the class index)."""
SUPERSAMPLE = 4
Colour = tuple[float, float, float]
Point = tuple[float, float]
LineFn = Callable[[list[Point], float], None]
DiscFn = Callable[[float, float, float], None]
PolygonFn = Callable[[list[Point]], None]
Image8 = NDArray[np.uint8]
_SKIES: dict[str, tuple[Colour, Colour]] = {  # (top, horizon) in [0, 1]
    "clear": ((0.22, 0.42, 0.82), (0.68, 0.80, 0.95)),
    "overcast": ((0.58, 0.61, 0.66), (0.80, 0.82, 0.84)),
    "dusk": ((0.28, 0.30, 0.55), (0.95, 0.62, 0.42)),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Cloud:
    """A soft elliptical cloud; position and radii are fractions of the image size."""

    x: float
    y: float
    rx: float
    ry: float
    opacity: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Scene:
    """Everything that decides an image except its noise.

    Positions and sizes are fractions of the image size; ``span`` is the object's width.
    """

    kind: Kind
    top: Colour
    """sky colour at the top edge"""
    horizon: Colour
    """sky colour at the bottom edge"""
    clouds: tuple[Cloud, ...]
    x: float
    """the object's centre"""
    y: float
    span: float
    angle: float
    """degrees; birds stay within 30 of level"""
    shade: float
    """grey level of the silhouette"""
    flap: float
    """how far a bird's wing tips are raised"""
    blur: float
    """Gaussian blur radius, in pixels of the output"""
    noise: float
    """standard deviation of the sensor noise"""
    gain: float
    """overall brightness factor: the lighting"""


def random_scene(kind: Kind, rng: np.random.Generator) -> Scene:
    """A scene of ``kind`` with every other property drawn at random."""
    top, horizon = _SKIES[str(rng.choice(list(_SKIES)))]
    jitter = rng.uniform(-0.06, 0.06, size=3)
    clouds = tuple(
        Cloud(
            x=float(rng.uniform(-0.1, 1.1)),
            y=float(rng.uniform(-0.1, 1.1)),
            rx=float(rng.uniform(0.1, 0.45)),
            ry=float(rng.uniform(0.05, 0.2)),
            opacity=float(rng.uniform(0.2, 0.7)),
        )
        for _ in range(int(rng.integers(0, 4)))
    )
    return Scene(
        kind=kind,
        top=_shift(top, jitter),
        horizon=_shift(horizon, jitter),
        clouds=clouds,
        x=float(rng.uniform(0.25, 0.75)),
        y=float(rng.uniform(0.25, 0.75)),
        span=float(rng.uniform(0.3, 0.7)),
        angle=float(rng.uniform(0, 360)) if kind != "bird" else float(rng.uniform(-30, 30)),
        shade=float(rng.uniform(0.02, 0.4)),
        flap=float(rng.uniform(-0.15, 0.3)),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(0.0, 0.06)),
        gain=float(rng.uniform(0.6, 1.25)),
    )


def _shift(colour: Colour, by: NDArray[np.float64]) -> Colour:
    r, g, b = (min(1.0, max(0.0, c + float(d))) for c, d in zip(colour, by, strict=True))
    return (r, g, b)


def render(scene: Scene, size: int, rng: np.random.Generator) -> Image8:
    """The scene as a ``size`` x ``size`` RGB image (uint8, height x width x 3)."""
    pixels = _sky(scene, size)
    if scene.kind != "sky":
        coverage = _silhouette(scene, size)[..., None]
        pixels = pixels * (1 - coverage) + scene.shade * coverage
    if scene.blur > 0:
        blurred = Image.fromarray(_to_uint8(pixels)).filter(ImageFilter.GaussianBlur(scene.blur))
        pixels = np.asarray(blurred, dtype=np.float64) / 255
    pixels = pixels * scene.gain + rng.normal(0.0, scene.noise, size=pixels.shape)
    return _to_uint8(pixels)


def _to_uint8(pixels: NDArray[np.float64]) -> Image8:
    return (np.clip(pixels, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _sky(scene: Scene, size: int) -> NDArray[np.float64]:
    """The gradient with its clouds blended in, as floats in [0, 1]."""
    ys, xs = np.mgrid[0:size, 0:size] / max(1, size - 1)
    fraction = ys[..., None]
    top, horizon = np.array(scene.top), np.array(scene.horizon)
    pixels = top * (1 - fraction) + horizon * fraction
    for cloud in scene.clouds:
        distance = ((xs - cloud.x) / cloud.rx) ** 2 + ((ys - cloud.y) / cloud.ry) ** 2
        amount = (cloud.opacity * np.exp(-distance))[..., None]
        pixels = pixels * (1 - amount) + 0.95 * amount
    return pixels


def _silhouette(scene: Scene, size: int) -> NDArray[np.float64]:
    """The fraction of each pixel the object covers, drawn large and averaged down."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    scale, turn = scene.span * big, math.radians(scene.angle)
    cos, sin = math.cos(turn), math.sin(turn)

    def place(u: float, v: float) -> tuple[float, float]:
        """Object coordinates (span 1, centred) to pixels of the large mask."""
        return (
            scene.x * big + scale * (u * cos - v * sin),
            scene.y * big + scale * (u * sin + v * cos),
        )

    def line(points: list[Point], width: float) -> None:
        draw.line([place(u, v) for u, v in points], fill=255, width=max(1, round(width * scale)))

    def polygon(points: list[Point]) -> None:
        draw.polygon([place(u, v) for u, v in points], fill=255)

    def disc(u: float, v: float, radius: float) -> None:
        cx, cy = place(u, v)
        r = radius * scale
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)

    if scene.kind == "drone":
        _quadcopter(line, disc)
    elif scene.kind == "bird":
        _bird(line, disc, scene.flap)
    elif scene.kind == "aircraft":
        _aircraft(polygon)
    small = mask.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255


def _quadcopter(line: LineFn, disc: DiscFn) -> None:
    """A body, four arms on the diagonals and a rotor at the end of each."""
    for u, v in ((0.3, 0.3), (-0.3, 0.3), (0.3, -0.3), (-0.3, -0.3)):
        line([(0.0, 0.0), (u, v)], 0.07)
        disc(u, v, 0.14)
    disc(0.0, 0.0, 0.12)


def _bird(line: LineFn, disc: DiscFn, flap: float) -> None:
    """Two bent wings (raised by ``flap``) and a small body."""
    line([(-0.5, -flap), (-0.2, 0.06), (0.0, 0.1), (0.2, 0.06), (0.5, -flap)], 0.07)
    disc(0.0, 0.1, 0.06)


def _aircraft(polygon: PolygonFn) -> None:
    """A long fuselage, swept wings and a tailplane, nose towards +u."""
    polygon([(0.5, 0.0), (0.42, 0.05), (-0.5, 0.04), (-0.5, -0.04), (0.42, -0.05)])
    polygon([(0.12, 0.04), (-0.12, 0.5), (-0.2, 0.5), (-0.04, 0.04)])
    polygon([(0.12, -0.04), (-0.12, -0.5), (-0.2, -0.5), (-0.04, -0.04)])
    polygon([(-0.36, 0.03), (-0.46, 0.18), (-0.5, 0.18), (-0.46, 0.03)])
    polygon([(-0.36, -0.03), (-0.46, -0.18), (-0.5, -0.18), (-0.46, -0.03)])


def image(kind: Kind, size: int, rng: np.random.Generator) -> Image8:
    """One random image of ``kind``."""
    return render(random_scene(kind, rng), size, rng)


@dataclass(frozen=True, slots=True)
class Clip:
    """Frames (T x H x W x 3, uint8) and each frame's class."""

    frames: Image8
    labels: tuple[Kind, ...]


def clip(kind: Kind, frames: int, size: int, rng: np.random.Generator) -> Clip:
    """An object of ``kind`` crossing a fixed scene in a straight line over ``frames`` frames.

    It starts just outside one edge and leaves past the opposite side, so the first and last
    frames are usually empty sky; a ``sky`` clip has no object at all.
    """
    scene = random_scene(kind, rng)
    heading = rng.uniform(0, 2 * math.pi)
    reach = 0.5 + scene.span / 2
    start = (0.5 - reach * math.cos(heading), 0.5 - reach * math.sin(heading))
    end = (0.5 + reach * math.cos(heading), 0.5 + reach * math.sin(heading))
    shift = rng.uniform(-0.2, 0.2, size=2)
    images: list[Image8] = []
    labels: list[Kind] = []
    for index in range(frames):
        t = index / max(1, frames - 1)
        x = start[0] + (end[0] - start[0]) * t + float(shift[0])
        y = start[1] + (end[1] - start[1]) * t + float(shift[1])
        inside = kind != "sky" and 0.0 <= x < 1.0 and 0.0 <= y < 1.0
        images.append(render(replace(scene, x=x, y=y), size, rng))
        labels.append(kind if inside else "sky")
    return Clip(np.stack(images), tuple(labels))
