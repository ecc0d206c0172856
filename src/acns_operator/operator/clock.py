"""Time as an injected dependency, so condition and certificate logic is tested
without sleeping or patching."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""


def utcnow() -> datetime:
    """The wall clock in UTC (the default :data:`Clock`)."""
    return datetime.now(UTC)
