"""Timing helpers: batches measured with ``perf_counter_ns``, and percentiles.

Timing one call of a sub-microsecond function is dominated by the timer itself, so a
batch runs many calls and the per-call cost is the batch time divided by the count;
repeating the batch gives a distribution whose median and p99 are reported, in
wall-clock time and in the thread's CPU time.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Distribution", "no_gc", "percentile", "time_batches"]


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile (``fraction`` in [0, 1]) of ``values``."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Distribution:
    """Per-operation times in nanoseconds, one sample per batch.

    ``samples_ns`` is wall-clock time (``perf_counter_ns``): what a caller waits.
    ``cpu_samples_ns`` is this thread's CPU time (``thread_time_ns``) over the same
    batches: it leaves out the time the thread sat preempted, so on a machine shared
    with other work it shows the code's own cost when the wall clock shows the queue.
    """

    samples_ns: list[float]
    cpu_samples_ns: list[float] = field(default_factory=list)

    @property
    def median_us(self) -> float:
        """The median per-operation time, in microseconds."""
        return percentile(self.samples_ns, 0.5) / 1000

    @property
    def p99_us(self) -> float:
        """The 99th-percentile per-operation time, in microseconds."""
        return percentile(self.samples_ns, 0.99) / 1000

    @property
    def cpu_median_us(self) -> float:
        """The median per-operation CPU time, in microseconds."""
        return percentile(self.cpu_samples_ns, 0.5) / 1000

    @property
    def cpu_p99_us(self) -> float:
        """The 99th-percentile per-operation CPU time, in microseconds."""
        return percentile(self.cpu_samples_ns, 0.99) / 1000

    @property
    def min_us(self) -> float:
        """The fastest batch's per-operation time, in microseconds."""
        return min(self.samples_ns) / 1000


@contextmanager
def no_gc() -> Iterator[None]:
    """Keep the cyclic garbage collector from pausing inside a measurement."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_batches(
    batch: Callable[[], object], *, operations: int, repeats: int, warmup: int = 3
) -> Distribution:
    """Run ``batch`` (which performs ``operations`` operations) ``repeats`` times.

    Returns the per-operation time of every repeat, after ``warmup`` untimed runs.
    """
    if operations <= 0 or repeats <= 0:
        raise ValueError("operations and repeats must be positive")
    for _ in range(warmup):
        batch()
    samples: list[float] = []
    cpu_samples: list[float] = []
    with no_gc():
        for _ in range(repeats):
            cpu_start = time.thread_time_ns()
            start = time.perf_counter_ns()
            batch()
            end = time.perf_counter_ns()
            cpu_end = time.thread_time_ns()
            samples.append((end - start) / operations)
            cpu_samples.append((cpu_end - cpu_start) / operations)
    return Distribution(samples, cpu_samples)
