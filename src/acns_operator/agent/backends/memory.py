"""The in-process backend: the same state as the kernel tables, no enforcement.

Used where nftables is unavailable and in fast tests; :meth:`MemoryBackend.verdict`
answers what the nftables chain would do with a packet.
"""

from __future__ import annotations

from acns_operator.agent.datapath import (
    DatapathUpdate,
    EndpointProgram,
    ObservedState,
    Verdict,
    evaluate,
)


class MemoryBackend:
    """Programs and selector sets kept in dicts; every update is one (trivial) step."""

    name = "memory"

    def __init__(self) -> None:
        self.programs: dict[str, EndpointProgram] = {}
        self.sets: dict[str, dict[str, float]] = {}
        self.transactions = 0

    def observe(self) -> ObservedState:
        """What an earlier run of the same process left (for restart tests)."""
        return ObservedState(
            fingerprints={ip: p.fingerprint() for ip, p in self.programs.items()},
            selectors=set(self.sets),
            elements={key: dict(ips) for key, ips in self.sets.items()},
        )

    def apply(self, update: DatapathUpdate, now: float) -> None:
        """Apply ``update``."""
        self.transactions += 1
        sets = self.sets
        if not (update.programs or update.new_selectors or update.removed_selectors):
            for key, ip in update.removed_elements:
                sets.get(key, {}).pop(ip, None)
            for key, ip, expiry in update.elements:
                target = sets.get(key)
                if target is None:
                    target = sets[key] = {}
                target[ip] = expiry
            return
        for key in update.new_selectors:
            self.sets.setdefault(key, {})
        for key, ip in update.removed_elements:
            self.sets.get(key, {}).pop(ip, None)
        for key, ip, expiry in update.elements:
            self.sets.setdefault(key, {})[ip] = expiry
        for key in update.removed_selectors:
            self.sets.pop(key, None)
        for ip, program in update.programs.items():
            if program is None:
                self.programs.pop(ip, None)
            else:
                self.programs[ip] = program

    def verdict(
        self,
        source: str,
        destination: str,
        protocol: int,
        port: int,
        now: float,
        *,
        established: bool = False,
    ) -> Verdict:
        """What the datapath does with one egress packet."""
        return evaluate(
            self.programs.get(source),
            destination,
            protocol,
            port,
            lambda key: self.sets.get(key, {}),
            now,
            established=established,
        )

    def close(self) -> None:
        """Nothing to release."""
