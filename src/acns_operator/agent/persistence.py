"""Persisting the policy-map store: an atomic snapshot plus an append-only journal.

``state.json`` is rewritten atomically (temporary file, fsync, rename) every few
seconds; every mapping recorded in between is appended to ``journal.jsonl`` with one
``write()``. A ``kill -9`` of the agent loses nothing: the kernel keeps written data in
the page cache, and a restart loads the snapshot, replays the journal, and settles
TTLs (what expired meanwhile becomes a zombie, Cilium §3.8).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from acns_operator.agent.store import PolicyMapStore
from acns_operator.errors import InputError

_PLAIN = re.compile(r"[-A-Za-z0-9_.:]*")
STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"


class StateFiles:
    """The agent's state directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._journal_fd: int | None = None

    @property
    def state_path(self) -> Path:
        """Where the snapshot lives."""
        return self.directory / STATE_FILE

    @property
    def journal_path(self) -> Path:
        """Where the journal lives."""
        return self.directory / JOURNAL_FILE

    def load(self, store: PolicyMapStore) -> int:
        """Restore ``store`` from the snapshot and the journal; returns entries loaded.

        A corrupt snapshot is an :class:`InputError`; a torn last journal line (the
        agent was killed mid-write) is ignored.
        """
        loaded = 0
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read {self.state_path}: {exc}") from exc
            loaded += store.restore(state)
        if self.journal_path.exists():
            for line in self.journal_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    store.record(
                        str(record["e"]),
                        str(record["n"]),
                        [str(ip) for ip in record["i"]],
                        int(record["t"]),
                        float(record["l"]),
                    )
                except (ValueError, KeyError, TypeError):
                    continue
                loaded += 1
            store.settle_restored()
        return loaded

    def append(
        self, endpoint: str, name: str, ips: Sequence[str], ttl: int, lookup_time: float
    ) -> None:
        """Journal one recorded mapping (one ``write()``, no fsync: survives kill -9)."""
        if self._journal_fd is None:
            self._journal_fd = os.open(
                self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
        if ips and _PLAIN.fullmatch(name) and _PLAIN.fullmatch(endpoint):
            # The hot path (every DNS answer): names and addresses were checked by the
            # gRPC service, so the JSON line needs no escaping (json.dumps is 4x slower).
            addresses = '","'.join(ips)
            line = (
                f'{{"e":"{endpoint}","n":"{name}","i":["{addresses}"],'
                f'"t":{int(ttl)},"l":{float(lookup_time)!r}}}'
            )
        else:
            line = json.dumps(
                {"e": endpoint, "n": name, "i": list(ips), "t": ttl, "l": lookup_time},
                separators=(",", ":"),
            )
        os.write(self._journal_fd, (line + "\n").encode())

    def compact(self, store: PolicyMapStore) -> None:
        """Write the snapshot atomically, then start an empty journal."""
        tmp = self.state_path.with_suffix(".json.tmp")
        data = json.dumps(store.to_state(), separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)
        # The snapshot now holds everything the journal did.
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        self.journal_path.unlink(missing_ok=True)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        """Close the journal."""
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
