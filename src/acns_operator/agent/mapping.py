"""Applying one DNS mapping: store, journal, datapath; then the proxy may release.

The handler the gRPC service calls for ``UpdateMapping``. Everything here is
synchronous on the event loop thread, so a mapping is fully applied (the kernel
transaction committed) when the coroutine returns and the service answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container

from acns_operator.agent.datapath import Datapath
from acns_operator.agent.fqdn_service import MappingRequest
from acns_operator.agent.metrics import AgentMetrics
from acns_operator.agent.persistence import StateFiles
from acns_operator.agent.store import PolicyMapStore
from acns_operator.proto import fqdndata_pb2 as pb


class MappingApplier:
    """Records mappings of local endpoints and applies them to the datapath."""

    def __init__(
        self,
        store: PolicyMapStore,
        datapath: Datapath,
        *,
        endpoints: Callable[[], Container[str]],
        files: StateFiles | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.store = store
        self.datapath = datapath
        self.endpoints = endpoints
        self.files = files
        self.metrics = metrics

    def apply(self, mapping: MappingRequest) -> tuple[int, str]:
        """Apply synchronously; returns (ResponseCode, message)."""
        if mapping.endpoint not in self.endpoints():
            if self.metrics is not None:
                self.metrics.mappings.labels("endpoint_not_found").inc()
            return (
                pb.RESPONSE_CODE_ERROR_ENDPOINT_NOT_FOUND,
                f"{mapping.endpoint} is not an endpoint of this node",
            )
        started = time.perf_counter()
        when = mapping.lookup_time if mapping.lookup_time is not None else self.store.clock.now()
        result = self.store.record(mapping.endpoint, mapping.name, mapping.ips, mapping.ttl, when)
        if self.files is not None:
            self.files.append(mapping.endpoint, mapping.name, mapping.ips, mapping.ttl, when)
        try:
            self.datapath.on_mapping(result)
        except Exception:
            if self.metrics is not None:
                self.metrics.datapath_errors.inc()
                self.metrics.mappings.labels("failed").inc()
            raise
        if self.metrics is not None:
            self.metrics.mapping_apply_seconds.observe(time.perf_counter() - started)
            self.metrics.mappings.labels("replayed" if mapping.replayed else "applied").inc()
        return pb.RESPONSE_CODE_NO_ERROR, ""

    async def __call__(self, mapping: MappingRequest) -> tuple[int, str]:
        """The gRPC service's handler."""
        return self.apply(mapping)
