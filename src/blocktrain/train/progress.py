"""What a person watching a training sees: a tqdm bar on a terminal, plain lines elsewhere.

Only rank 0 shows anything. On a terminal the bar advances every step and shows the last
logged values; in a log file (Slurm output, captured logs) one line per logged step and per
evaluation is easier to read than a bar's carriage returns.

Must not: log to the run or compute metrics; it only shows what it is given.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Never, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


def format_values(values: Mapping[str, float]) -> str:
    """``loss 0.1234  lr 0.01``: names without their ``train_`` prefix, four significant digits."""
    return "  ".join(f"{name.removeprefix('train_')} {value:.4g}" for name, value in values.items())


class Display:
    """Progress of one training; every method is a no-op when not ``enabled``."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        enabled: bool = True,
        bar: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self._enabled = enabled
        self._lines = stream or sys.stdout
        self._bar: tqdm[Never] | None = None
        if not enabled:
            return
        terminal = sys.stderr.isatty() if bar is None else bar
        if terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def step(self) -> None:
        """One more optimizer step is done."""
        if self._bar is not None:
            self._bar.update(1)

    def values(self, index: int, values: Mapping[str, float]) -> None:
        """The values logged at step ``index`` (0-based): the bar's postfix, or a line."""
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(format_values(values), refresh=False)
        else:
            self._write(f"step {index:4d}  {format_values(values)}")

    def note(self, text: str) -> None:
        """A line of its own (an evaluation's results, a resume)."""
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            self._write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, text: str) -> None:
        self._lines.write(text + "\n")
        self._lines.flush()
