"""Run one function over many items on a thread pool; the first failure stops the rest.

Must not know what the items are; no retries (``retry``).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_parallel(function: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[function(item) for item in items]`` on up to ``workers`` threads, in item order.
    When one call raises, calls not yet started are cancelled, running ones are waited for,
    and that first exception propagates."""
    todo = list(items)
    if workers <= 1 or len(todo) <= 1:
        return [function(item) for item in todo]
    with cf.ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
        futures = [pool.submit(function, item) for item in todo]
        done, _ = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
        failed = [future for future in futures if future in done and future.exception()]
        if failed:
            for future in futures:
                future.cancel()
            cf.wait(futures)
            failed[0].result()  # raises that call's exception
        return [future.result() for future in futures]
