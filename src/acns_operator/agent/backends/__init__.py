"""Enforcement backends: ``nftables`` (the kernel, real) and ``memory`` (in process).

Both implement :class:`acns_operator.agent.datapath.EnforcementBackend` and enforce
the same model (:mod:`acns_operator.agent.datapath`); :func:`create_backend` picks one
from the settings.
"""

from __future__ import annotations

from acns_operator.agent.datapath import EnforcementBackend
from acns_operator.settings import AgentSettings


def create_backend(settings: AgentSettings) -> EnforcementBackend:
    """The backend the settings ask for."""
    if settings.backend == "memory":
        from acns_operator.agent.backends.memory import MemoryBackend

        return MemoryBackend()
    from acns_operator.agent.backends.nftables import NftablesBackend

    return NftablesBackend.from_settings(settings)
