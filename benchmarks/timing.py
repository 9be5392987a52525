"""Shared by the benchmark scripts: the median wall time of a call."""
from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn()`` (the median resists a stray slow run)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
