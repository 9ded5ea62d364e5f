"""Retries with exponential backoff and jitter, for requests that may fail for a while.

Must not know which errors are worth retrying (the caller says) nor what is retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from blocktrain.errors import BlocktrainError

T = TypeVar("T")
_log = logging.getLogger("blocktrain.data")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """``attempts`` tries in all; the pause before try n+1 is about ``base_s * 2**(n-1)``,
    at most ``max_s``, jittered down to half so that many clients do not retry in step."""

    attempts: int = 6
    base_s: float = 0.5
    max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise BlocktrainError(f"retry attempts must be at least 1, got {self.attempts}")
        if not 0 <= self.base_s <= self.max_s:
            raise BlocktrainError(
                f"retry pauses need 0 <= base ({self.base_s}) <= max ({self.max_s})"
            )

    def delay(self, failures: int, unit: float) -> float:
        """The pause after ``failures`` failed tries; ``unit`` in [0, 1) is the jitter draw."""
        ceiling = min(self.max_s, self.base_s * 2 ** (failures - 1))
        return ceiling * (0.5 + unit / 2)

    @property
    def worst_case_s(self) -> float:
        """The longest the pauses of one call can add up to."""
        return sum(min(self.max_s, self.base_s * 2**n) for n in range(self.attempts - 1))


def retry_call(
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    retryable: Callable[[BaseException], bool],
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
) -> T:
    """Run ``call`` until it succeeds, a failure is not ``retryable``, or the tries run out;
    the last failure propagates unchanged so callers can translate it."""
    failures = 0
    while True:
        try:
            return call()
        except Exception as error:
            failures += 1
            if failures >= policy.attempts or not retryable(error):
                raise
            pause = policy.delay(failures, draw())
            _log.warning(
                "%s failed (%s: %s); try %d of %d in %.1f s",
                what,
                type(error).__name__,
                error,
                failures + 1,
                policy.attempts,
                pause,
            )
            sleep(pause)
