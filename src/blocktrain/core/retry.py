"""Retries with exponential backoff: the one policy and the one loop of every retrying caller.

A :class:`RetryPolicy` says how many tries and the pauses between them (growing by ``factor``
up to ``max_delay_s``, optionally jittered down to half so that many clients do not retry in
step); :func:`retry_call` runs a call under it, and :meth:`RetryPolicy.delays` gives the pauses
to a caller that schedules its retries itself (the tracking writer's thread).

Must not know which errors are worth retrying (the caller says) nor what is retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from blocktrain.errors import BlocktrainError

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """``attempts`` tries in all; the pause after failed try n is ``first_delay_s *
    factor**(n-1)``, at most ``max_delay_s``, and with ``jitter`` a random point between half
    of that and all of it."""

    attempts: int = 6
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0
    factor: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise BlocktrainError(f"retry attempts must be at least 1, got {self.attempts}")
        if not 0 <= self.first_delay_s <= self.max_delay_s:
            raise BlocktrainError(
                f"retry pauses need 0 <= first ({self.first_delay_s}) <= max ({self.max_delay_s})"
            )
        if self.factor < 1:
            raise BlocktrainError(f"the retry pauses cannot shrink (factor {self.factor} < 1)")

    def delay(self, failures: int, unit: float = 1.0) -> float:
        """The pause after ``failures`` failed tries; ``unit`` in [0, 1) is the jitter draw."""
        try:
            grown = self.first_delay_s * self.factor ** (failures - 1)
        except OverflowError:  # a float power past 1e308: long since at the cap
            grown = self.max_delay_s
        ceiling = min(self.max_delay_s, grown)
        return ceiling * (0.5 + unit / 2) if self.jitter else ceiling

    def delays(self, draw: Callable[[], float] = random.random) -> Iterator[float]:
        """The pauses after the first, second, ... failure, without end (``attempts`` is the
        caller's to count)."""
        failures = 0
        while True:
            failures += 1
            yield self.delay(failures, draw())

    @property
    def worst_case_s(self) -> float:
        """The longest the pauses of one call can add up to."""
        return sum(self.delay(n) for n in range(1, self.attempts))


def retry_call(
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    retryable: Callable[[BaseException], bool],
    what: str,
    log: logging.Logger | None,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
) -> T:
    """Run ``call`` until it succeeds, a failure is not ``retryable``, or the tries run out;
    the last failure propagates unchanged so callers can translate it. Each retry is a warning
    on ``log`` naming ``what`` failed and why (``None``: the caller reports failures itself)."""
    failures = 0
    while True:
        try:
            return call()
        except Exception as error:
            failures += 1
            if failures >= policy.attempts or not retryable(error):
                raise
            pause = policy.delay(failures, draw())
            if log is not None:
                log.warning(
                    "%s failed (%s: %s); try %d of %d in %.1f s",
                    what,
                    type(error).__name__,
                    error,
                    failures + 1,
                    policy.attempts,
                    pause,
                )
            sleep(pause)
