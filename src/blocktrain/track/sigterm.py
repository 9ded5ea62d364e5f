"""SIGTERM as an exception: a tracked call outside a launched job ends KILLED, not silently.

Must not: take over SIGTERM in a ``slurm-launch`` job, where it means preemption and the restart
protocol (:mod:`blocktrain.restart`) checkpoints instead, or outside the main thread, where
Python cannot install handlers.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Generator
from types import FrameType

from blocktrain.errors import Terminated


@contextlib.contextmanager
def terminate_on_sigterm() -> Generator[None]:
    """Turn SIGTERM into :class:`Terminated` in the main thread for the block's duration."""
    from blocktrain import restart

    # In a launched job SIGTERM means preemption: the restart protocol checkpoints instead.
    if threading.current_thread() is not threading.main_thread() or restart.active():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
