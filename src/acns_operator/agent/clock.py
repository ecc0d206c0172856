"""Time, injected: the store, GC and persistence read it through a :class:`Clock`.

Wall-clock seconds (``time.time()``), because expiry times are persisted and must mean
the same thing after a restart. Tests use :class:`ManualClock` and never sleep.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells the time in wall-clock seconds since the epoch."""

    def now(self) -> float:
        """The current time."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """The current time from ``time.time()``."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to (tests, benchmarks)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        """The current (manual) time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._now += seconds

    def set(self, when: float) -> None:
        """Jump to ``when``."""
        self._now = when
