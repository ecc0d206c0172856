"""Which connections are alive: (source, destination) pairs from conntrack.

Zombies stay allowed while the kernel tracks a connection from the endpoint to the
expired IP. Read ``/proc/net/nf_conntrack`` when the kernel offers it, else run
``conntrack -L``; both list ``src=... dst=...`` for the original direction first.
Runs in the node's namespace (through :class:`~acns_operator.agent.netns.NetnsRunner`).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from acns_operator.agent.netns import NetnsRunner

_ORIGINAL = re.compile(r"\bsrc=(\S+)\s+dst=(\S+)")
_TCP_STATE = re.compile(r"\btcp\s+6\s+\d+\s+([A-Z_]+)\s")
# A closed TCP connection lingers in conntrack (TIME_WAIT: two minutes) but carries
# nothing any more: it must not keep an expired IP alive.
CLOSED_TCP_STATES = frozenset({"TIME_WAIT", "CLOSE"})


def parse_connections(text: str) -> set[tuple[str, str]]:
    """(source, destination) of the original direction of every live connection."""
    out: set[tuple[str, str]] = set()
    for line in text.splitlines():
        state = _TCP_STATE.search(line)
        if state is not None and state.group(1) in CLOSED_TCP_STATES:
            continue
        match = _ORIGINAL.search(line)
        if match is not None:
            out.add((match.group(1), match.group(2)))
    return out


class ConntrackReader:
    """Reads live connections in a namespace; ``mode`` is auto, proc, tool or none."""

    def __init__(self, runner: NetnsRunner, mode: str = "auto") -> None:
        self.runner = runner
        self.mode = mode

    def _read(self) -> str:
        proc = Path("/proc/thread-self/net/nf_conntrack")
        if self.mode in ("auto", "proc") and proc.exists():
            return proc.read_text()
        if self.mode == "proc":
            return ""
        try:
            result = subprocess.run(
                ["conntrack", "-L"], capture_output=True, text=True, check=False, timeout=30
            )
        except FileNotFoundError:
            return ""
        return result.stdout

    def live_connections(self) -> set[tuple[str, str]]:
        """The live (source, destination) pairs (empty when conntrack is unreadable)."""
        if self.mode == "none":
            return set()
        return parse_connections(self.runner.call(self._read))
