"""One benchmark's result, and the facts about the machine it ran on."""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Record", "machine_facts", "make_record"]


@dataclass(frozen=True)
class Record:
    """What one benchmark run produced.

    ``figures`` keys name their unit (``_us``, ``_ms``, ``_x`` for ratios,
    ``_count``); values are plain numbers so the JSON stays diffable.
    """

    name: str
    figures: dict[str, float]
    command: str
    date: str
    machine: dict[str, Any]
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """Rebuild a record read back from ``docs/benchmarks.json``."""
        return cls(
            name=str(data["name"]),
            figures={str(key): value for key, value in dict(data["figures"]).items()},
            command=str(data.get("command", "")),
            date=str(data.get("date", "")),
            machine=dict(data.get("machine", {})),
            notes=str(data.get("notes", "")),
            extra=dict(data.get("extra", {})),
        )


def machine_facts() -> dict[str, Any]:
    """Describe where the numbers came from: usable CPUs, load, Python, platform."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        nproc = os.cpu_count() or 0
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        load = -1.0
    return {
        "nproc": nproc,
        # Other work on the machine shows up in the tail percentiles; record how busy it was.
        "load_average_1m": load,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "processor": platform.machine(),
    }


def make_record(
    name: str,
    figures: dict[str, float],
    *,
    command: str,
    notes: str = "",
    extra: dict[str, Any] | None = None,
) -> Record:
    """Build a :class:`Record` stamped with the current UTC time and machine facts."""
    return Record(
        name=name,
        figures=figures,
        command=command,
        date=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        machine=machine_facts(),
        notes=notes,
        extra=extra or {},
    )
