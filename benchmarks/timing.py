"""What every benchmark here shares: the median wall-clock time of a call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 1) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` (the median shrugs off one slow run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
