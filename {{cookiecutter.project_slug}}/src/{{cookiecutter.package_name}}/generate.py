"""Write the synthetic dataset to a folder or to S3, in the layout :mod:`.data` reads.

    python -m {{ cookiecutter.package_name }}.entry generate --output data/sky
    python -m {{ cookiecutter.package_name }}.entry generate --output s3://bucket/drone-sky

The dataset holds ``images/CLASS/CLASS-NNNNN.png`` (as many of each class), video clips
``videos/clip-NNN.y4m`` with their per-frame labels ``videos/clip-NNN.csv``, and
``dataset.json`` (how it was made). Every image is drawn from its own seed (the dataset
seed, the class and the number), so a larger dataset keeps the images of a smaller one.
S3 is configured by ``S3_ENDPOINT_URL`` and the ``AWS_*`` variables (blocktrain's
docs/data.md).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blocktrain.errors import BlocktrainError

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.synthetic import Kind

CLIP_KINDS: tuple[Kind, ...] = ("drone", "bird", "aircraft", "sky")
CLASS_COUNT = 4


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What :func:`write_dataset` draws."""

    images: int
    clips: int
    frames: int
    size: int
    seed: int


def generate(
    *,
    output: str = "data/sky",
    images: int = 4000,
    clips: int = 8,
    frames: int = 48,
    size: int = 48,
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """Generate the synthetic drone, bird, aircraft and empty-sky dataset.

    Args:
        output: a folder, or ``s3://bucket/prefix`` to upload to
        images: still images in all (the same number of each class)
        clips: video clips, cycling through drone, bird, aircraft and empty sky
        frames: frames per clip (at 10 frames per second)
        size: side of the square images and frames, in pixels
        seed: the dataset's seed
        overwrite: replace what is at ``output`` (otherwise an existing dataset stops it)
    """
    if images < CLASS_COUNT or size < 16 or frames < 1 or clips < 0:
        raise BlocktrainError(
            f"need at least {CLASS_COUNT} images of 16 pixels or more and one frame per clip"
        )
    plan = Plan(images=images, clips=clips, frames=frames, size=size, seed=seed)
    if output.startswith("s3://"):
        _upload(output, plan, overwrite=overwrite)
    else:
        _write_folder(Path(output), plan, overwrite=overwrite)
    print(f"wrote {images} images and {clips} clips to {output}")


def _write_folder(folder: Path, plan: Plan, *, overwrite: bool) -> None:
    """Write beside ``folder``, then move into place: no half-written dataset is left."""
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise BlocktrainError(f"{folder} already holds files; remove it or pass --overwrite")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as work:
        staged = Path(work) / "dataset"
        write_dataset(staged, plan)
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)


def _upload(uri: str, plan: Plan, *, overwrite: bool) -> None:
    from blocktrain.data.storage import storage_for

    storage = storage_for(uri)
    if storage.exists(uri) and not overwrite:
        raise BlocktrainError(f"{uri} already holds objects; choose another prefix or --overwrite")
    with tempfile.TemporaryDirectory() as work:
        write_dataset(Path(work), plan)
        storage.upload(Path(work), uri)


def write_dataset(folder: Path, plan: Plan) -> None:
    """Write the images, the clips and ``dataset.json`` into ``folder``."""
    import numpy as np
    from PIL import Image

    from {{ cookiecutter.package_name }} import synthetic
    from {{ cookiecutter.package_name }}.video import write_y4m

    per_class = plan.images // len(synthetic.CLASSES)
    for number, kind in enumerate(synthetic.CLASSES):
        target = folder / "images" / kind
        target.mkdir(parents=True)
        for index in range(per_class):
            rng = np.random.default_rng([plan.seed, number, index])
            pixels = synthetic.image(kind, plan.size, rng)
            Image.fromarray(pixels).save(target / f"{kind}-{index:05d}.png")
    videos = folder / "videos"
    videos.mkdir()
    for index in range(plan.clips):
        kind = CLIP_KINDS[index % len(CLIP_KINDS)]
        rng = np.random.default_rng([plan.seed, 1000, index])
        made = synthetic.clip(kind, plan.frames, plan.size, rng)
        write_y4m(videos / f"clip-{index:03d}.y4m", made.frames)
        rows = [f"{frame},{label}" for frame, label in enumerate(made.labels)]
        (videos / f"clip-{index:03d}.csv").write_text("frame,label\n" + "\n".join(rows) + "\n")
    description = {
        "generator": synthetic.__name__,
        "classes": list(synthetic.CLASSES),
        "images_per_class": per_class,
        **asdict(plan),
    }
    (folder / "dataset.json").write_text(json.dumps(description, indent=1) + "\n")
