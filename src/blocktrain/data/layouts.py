"""How image datasets are laid out, and the index of (image, label) pairs built from the
member names of a source. Pure: member names in, index out (the csv layout reads one file).

- ``folders``: ``ROOT/CLASS/.../IMAGE``; the label is the index of CLASS among the sorted
  class folders.
- ``pairs``: ``ROOT/images/NAME.png`` with ``ROOT/labels/NAME.*`` (a mask image, or a text
  file of numbers); every image needs exactly one label and every label an image.
- ``csv``: ``ROOT/labels.csv`` with a header ``image,label`` and one row per image (its path
  below ROOT); every image below ROOT must be listed and every listed image must exist.

Must not decode images or read members other than the csv index.
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from blocktrain.errors import BlocktrainError

LayoutKind = Literal["folders", "pairs", "csv"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")
_SHOWN = 3  # example names in a mismatch message


class LabelMismatchError(BlocktrainError):
    """Images and labels that do not pair up."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """Where images and labels are inside a source; see the module docstring."""

    kind: LayoutKind = "folders"
    root: str = ""
    images: str = "images"
    labels: str = "labels"
    labels_file: str = "labels.csv"

    def __post_init__(self) -> None:
        kinds = get_args(LayoutKind)
        if self.kind not in kinds:
            raise BlocktrainError(f"unknown layout {self.kind!r}; choose one of {', '.join(kinds)}")

    def prefix(self, sub: str = "") -> str:
        """``ROOT/SUB/`` as a member-name prefix ('' for the top level)."""
        path = "/".join(part.strip("/") for part in (self.root, sub) if part.strip("/"))
        return f"{path}/" if path else ""


@dataclass(frozen=True, slots=True)
class Index:
    """The samples of a dataset: image members, and per image either a class index
    (``targets``) or a label member (``label_members``)."""

    images: tuple[str, ...]
    classes: tuple[str, ...]
    targets: tuple[int, ...] | None = None
    label_members: tuple[str, ...] | None = None


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def build_index(
    names: Sequence[str], layout: Layout, source: str, read: Callable[[str], bytes]
) -> Index:
    """The index of ``names`` (members of ``source``) under ``layout``; ``read`` fetches the
    labels file of the csv layout."""
    if layout.kind == "folders":
        return _folders(names, layout, source)
    if layout.kind == "pairs":
        return _pairs(names, layout, source)
    return _csv(names, layout, source, read)


def _under(names: Sequence[str], prefix: str) -> list[str]:
    return sorted(name[len(prefix) :] for name in names if name.startswith(prefix))


def _where(source: str, prefix: str) -> str:
    return f"{source}/{prefix.rstrip('/')}" if prefix else source


def _folders(names: Sequence[str], layout: Layout, source: str) -> Index:
    prefix = layout.prefix()
    images = [rel for rel in _under(names, prefix) if is_image(rel)]
    loose = [rel for rel in images if "/" not in rel]
    if loose:
        raise LabelMismatchError(
            f"{_where(source, prefix)}: image {loose[0]!r} is not inside a class folder; "
            "put each image in CLASS/ (layout 'folders') or choose another layout"
        )
    if not images:
        raise LabelMismatchError(
            f"{_where(source, prefix)}: no images ({', '.join(IMAGE_SUFFIXES)}) in class "
            "folders; check the source and the layout's root"
        )
    classes = tuple(sorted({rel.split("/", 1)[0] for rel in images}))
    position = {name: index for index, name in enumerate(classes)}
    return Index(
        images=tuple(prefix + rel for rel in images),
        classes=classes,
        targets=tuple(position[rel.split("/", 1)[0]] for rel in images),
    )


def _stems(rels: Sequence[str], where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for rel in rels:
        stem = posixpath.splitext(rel)[0]
        if stem in found:
            raise LabelMismatchError(
                f"{where}: {found[stem]!r} and {rel!r} share the name {stem!r}; keep one"
            )
        found[stem] = rel
    return found


def _pairs(names: Sequence[str], layout: Layout, source: str) -> Index:
    image_prefix, label_prefix = layout.prefix(layout.images), layout.prefix(layout.labels)
    images = _stems(
        [rel for rel in _under(names, image_prefix) if is_image(rel)],
        _where(source, image_prefix),
    )
    labels = _stems(_under(names, label_prefix), _where(source, label_prefix))
    if not images:
        raise LabelMismatchError(
            f"{_where(source, image_prefix)}: no images; check the source and the layout's "
            "root and images folder"
        )
    unlabelled = sorted(set(images) - set(labels))
    orphans = sorted(set(labels) - set(images))
    if unlabelled or orphans:
        problems: list[str] = []
        if unlabelled:
            shown = ", ".join(image_prefix + images[s] for s in unlabelled[:_SHOWN])
            problems.append(f"{len(unlabelled)} images have no label (e.g. {shown})")
        if orphans:
            shown = ", ".join(label_prefix + labels[s] for s in orphans[:_SHOWN])
            problems.append(f"{len(orphans)} labels have no image (e.g. {shown})")
        raise LabelMismatchError(
            f"{source}: {' and '.join(problems)}; every {image_prefix}NAME.* needs "
            f"{label_prefix}NAME.* and the other way round"
        )
    stems = sorted(images)
    return Index(
        images=tuple(image_prefix + images[s] for s in stems),
        classes=(),
        label_members=tuple(label_prefix + labels[s] for s in stems),
    )


def _csv(names: Sequence[str], layout: Layout, source: str, read: Callable[[str], bytes]) -> Index:
    prefix = layout.prefix()
    member = prefix + layout.labels_file.strip("/")
    where = f"{source}/{member}"
    if member not in names:
        raise LabelMismatchError(f"{where} does not exist; add it or choose another layout")
    try:
        rows = list(csv.reader(io.StringIO(read(member).decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as error:
        raise LabelMismatchError(f"{where} is not a UTF-8 CSV file ({error}); fix it") from None
    if not rows or [cell.strip().lower() for cell in rows[0][:2]] != ["image", "label"]:
        raise LabelMismatchError(f"{where}: the first line must be the header 'image,label'")
    present = {rel for rel in _under(names, prefix) if is_image(rel)}
    labelled: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise LabelMismatchError(f"{where}:{line}: expected 'image,label', got {row!r}")
        image, label = row[0].strip(), row[1].strip()
        if image in labelled:
            raise LabelMismatchError(f"{where}:{line}: {image!r} is listed twice; keep one row")
        if image not in present:
            raise LabelMismatchError(
                f"{where}:{line}: image {image!r} does not exist in {_where(source, prefix)}; "
                "fix the row or add the image"
            )
        labelled[image] = label
    unlisted = sorted(present - set(labelled))
    if unlisted:
        raise LabelMismatchError(
            f"{where}: {len(unlisted)} images are not listed (e.g. "
            f"{', '.join(unlisted[:_SHOWN])}); add a row for each or remove them"
        )
    if not labelled:
        raise LabelMismatchError(f"{where} lists no images; add 'image,label' rows")
    classes = tuple(sorted(set(labelled.values())))
    position = {name: index for index, name in enumerate(classes)}
    images = sorted(labelled)
    return Index(
        images=tuple(prefix + rel for rel in images),
        classes=classes,
        targets=tuple(position[labelled[rel]] for rel in images),
    )
