"""``entrypoint``: the Slack and MLflow annotators composed for an entry function."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from blocktrain.notify import notify
from blocktrain.track import track

P = ParamSpec("P")
R = TypeVar("R")


def entrypoint(func: Callable[P, R], /) -> Callable[P, R]:
    """Track the call as an MLflow run and report it on Slack.

    Tracking is the outer layer so that the Slack messages carry the run link and the final
    metrics; both layers use ``functools.wraps``, so defopt still reads the signature and the
    docstring of ``func``.
    """
    return track(notify(func))
