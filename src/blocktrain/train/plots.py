"""Images of a training for its run: a classifier's confusion matrix, loss and metric curves.

Figures are drawn with matplotlib's object API onto Agg canvases, never through pyplot, so
no backend is chosen globally and no window can open on a cluster node.

Must not: import pyplot, or log to the run (the caller does); it only writes image files.
"""

# matplotlib's stubs leave **kwargs untyped on nearly every drawing method.
# pyright: reportUnknownMemberType=false

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Curves = Mapping[str, Sequence[tuple[int, float]]]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def confusion_matrix(
    matrix: Sequence[Sequence[int]], path: Path, class_names: Sequence[str] | None = None
) -> Path:
    """Counts per (true, predicted) class, shaded by each true class's share; a PNG file."""
    classes = len(matrix)
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    if len(names) != classes:
        names = [str(i) for i in range(classes)]
    size = min(2.0 + 0.6 * classes, 20.0)
    figure = _figure(size, size)
    axes = figure.add_subplot()
    totals = [max(1, sum(row)) for row in matrix]
    shares = [[count / total for count in row] for row, total in zip(matrix, totals, strict=True)]
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true class")
    axes.set_xticks(range(classes), names, rotation=45, ha="right")
    axes.set_yticks(range(classes), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if classes <= 30:
        for row in range(classes):
            for column in range(classes):
                colour = "white" if shares[row][column] > 0.5 else "black"
                axes.text(
                    column, row, str(matrix[row][column]), ha="center", va="center", color=colour
                )
    axes.set_title("confusion matrix")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def curves(history: Curves, path: Path) -> Path:
    """Losses together in one panel, every other metric in its own, against the step; a PNG."""
    losses = {name: points for name, points in history.items() if "loss" in name and points}
    others = {name: points for name, points in history.items() if "loss" not in name and points}
    panels: list[dict[str, Sequence[tuple[int, float]]]] = [losses] if losses else []
    panels += [{name: points} for name, points in others.items()]
    figure = _figure(6.0, 2.5 * max(1, len(panels)))
    for index, panel in enumerate(panels, start=1):
        axes = figure.add_subplot(len(panels), 1, index)
        for name, points in panel.items():
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, label=name, marker="o" if len(points) < 30 else None)
        axes.set_xlabel("step")
        axes.legend()
        axes.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
