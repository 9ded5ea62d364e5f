"""The lock of one cache entry (``.locks/NAME.lock``): exclusive while the entry fills or is
removed, and recording who holds it (host, pid, origin) so that a waiter can say whom it waits
for and ``blocktrain cache size`` can name a partial entry's origin.

Locking itself is ``blocktrain.core.atomic``; must not touch the entry's files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Generator
from pathlib import Path
from typing import cast

from blocktrain.core.atomic import locked

_log = logging.getLogger("blocktrain.data")


@contextlib.contextmanager
def exclusive(path: Path, origin: str) -> Generator[None]:
    """Hold the entry's lock, waiting for another holder (and saying so) when there is one."""

    def say_whom() -> None:
        holder = holder_of(path)
        _log.info(
            "waiting for %s (pid %s on %s) to finish %s",
            path.name,
            holder.get("pid", "?"),
            holder.get("host", "?"),
            holder.get("origin", origin),
        )

    with locked(path, on_wait=say_whom) as fd:
        _write_holder(fd, origin)
        yield


def _write_holder(fd: int, origin: str) -> None:
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "origin": origin}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)


def holder_of(path: Path) -> dict[str, str]:
    """Who holds (or last held) a lock: host, pid, origin."""
    try:
        data: object = json.loads(path.read_text() or "{}")
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(key): str(value) for key, value in cast("dict[object, object]", data).items()}
