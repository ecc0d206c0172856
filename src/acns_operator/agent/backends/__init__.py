"""Enforcement backends: ``nftables`` (the kernel, real) and ``memory`` (in process).

Both implement :class:`acns_operator.agent.datapath.EnforcementBackend` and enforce
the same model (:mod:`acns_operator.agent.datapath`); :func:`create_backend` picks one
from the settings.
"""

from __future__ import annotations

import logging
import subprocess

from acns_operator.agent.datapath import EnforcementBackend
from acns_operator.errors import AcnsError
from acns_operator.settings import AgentSettings

log = logging.getLogger(__name__)


def create_backend(settings: AgentSettings) -> EnforcementBackend:
    """The backend the settings ask for ('auto': nftables when usable, else memory)."""
    from acns_operator.agent.backends.memory import MemoryBackend

    if settings.backend == "memory":
        return MemoryBackend()
    from acns_operator.agent.backends.nftables import NftablesBackend

    if settings.backend == "nftables":
        return NftablesBackend.from_settings(settings)
    try:
        backend = NftablesBackend.from_settings(settings)
        backend.run("list tables\n")
    except (OSError, AcnsError, subprocess.SubprocessError) as exc:
        log.warning("nftables cannot be used (%s): NOTHING IS ENFORCED (memory backend)", exc)
        return MemoryBackend()
    return backend
