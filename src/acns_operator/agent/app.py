"""The agent program: watches -> compiler -> datapath + proxy snapshots; GC; persistence.

Start-up order matters for "enforcement outlives the agent":

1. The backend reads back what the kernel still enforces (nothing is wiped).
2. The store is restored from disk (snapshot + journal, TTLs honoured).
3. The gRPC server starts at once: mappings for endpoints the kernel still knows are
   applied even before the API server answers. No snapshot is pushed before the
   first full sync, so the proxy keeps its own persisted rules meanwhile.
4. When Pods, Namespaces, Services and CiliumNetworkPolicies are all listed, the
   compiled programs replace the kernel's in one diff, and the first snapshot goes out.
5. From then on every watch event recompiles only the affected endpoints.

If the API server goes away, watches retry with backoff and everything keeps its last
state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from acns_operator.agent.backends import create_backend
from acns_operator.agent.clock import Clock, SystemClock
from acns_operator.agent.conntrack import ConntrackReader
from acns_operator.agent.datapath import Datapath, EndpointProgram, EnforcementBackend
from acns_operator.agent.fqdn_service import FQDNDataService, SnapshotHub, start_server
from acns_operator.agent.kube import KubeClient, Reflector, load_kubeconfig, object_key
from acns_operator.agent.mapping import MappingApplier
from acns_operator.agent.metrics import AgentMetrics
from acns_operator.agent.netns import NetnsRunner
from acns_operator.agent.persistence import StateFiles
from acns_operator.agent.programs import to_endpoint_policy, to_program
from acns_operator.agent.store import PolicyMapStore
from acns_operator.policy import validate
from acns_operator.policy.compile import CompileOptions, Compiler, EndpointRules, Pod, Service
from acns_operator.proto import fqdndata_pb2 as pb
from acns_operator.settings import AgentSettings, PolicySettings

log = logging.getLogger(__name__)

CNP_PATH = "/apis/cilium.io/v2/ciliumnetworkpolicies"
POD_PATH = "/api/v1/pods"
NAMESPACE_PATH = "/api/v1/namespaces"
SERVICE_PATH = "/api/v1/services"


def pod_from_object(obj: dict[str, Any]) -> Pod | None:
    """The parts of a Pod the agent keeps; None for finished pods (their IP is free)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    return Pod(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        ip=status.get("podIP") or None,
        node=spec.get("nodeName") or None,
        host_ip=status.get("hostIP") or None,
    )


def policy_key(obj: dict[str, Any]) -> str:
    """The compiler's key of a CiliumNetworkPolicy object."""
    return f"CiliumNetworkPolicy/{object_key(obj)}"


def service_from_object(obj: dict[str, Any]) -> Service:
    """The parts of a Service the agent keeps."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return Service(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        cluster_ip=spec.get("clusterIP") or None,
        selector=dict(spec["selector"]) if spec.get("selector") else None,
    )


class Agent:
    """One node's agent (see the module doc)."""

    def __init__(
        self,
        settings: AgentSettings,
        policy_settings: PolicySettings,
        *,
        backend: EnforcementBackend | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        kube: KubeClient | None = None,
    ) -> None:
        self.settings = settings
        self.policy_settings = policy_settings
        self.clock = clock or SystemClock()
        self.registry = registry or CollectorRegistry()
        self.backend = backend or create_backend(settings)
        self.store = PolicyMapStore(
            self.clock,
            min_ttl=settings.min_ttl,
            max_ips_per_hostname=settings.max_ips_per_hostname,
            max_zombies_per_endpoint=settings.max_deferred_connection_deletes,
            idle_grace=settings.idle_connection_grace_period,
            zombie_ttl=settings.zombie_ttl,
        )
        self.files = StateFiles(settings.state_dir)
        self.datapath = Datapath(self.backend, self.store, self.clock)
        self.compiler = Compiler(CompileOptions(node_name=settings.node_name))
        self.compiler.tracking = False  # until the first full sync compiles everything
        self.hub = SnapshotHub(settings.node_name)
        self.metrics = AgentMetrics(
            self.registry, self.store, datapath=lambda: self.datapath, hub=lambda: self.hub
        )
        self.rules: dict[str, EndpointRules] = {}
        self._endpoint_policies: dict[str, pb.EndpointPolicy] = {}
        self._known_ips: set[str] = set()
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self.synced = asyncio.Event()
        self.blocked_policies: dict[str, list[str]] = {}
        self._kube = kube
        self._runner = NetnsRunner(settings.netns) if settings.conntrack != "none" else None
        self.conntrack = (
            ConntrackReader(self._runner, settings.conntrack) if self._runner is not None else None
        )
        self.applier = MappingApplier(
            self.store,
            self.datapath,
            endpoints=lambda: self._known_ips,
            files=self.files,
            metrics=self.metrics,
        )
        self.service = FQDNDataService(
            self.hub, self.applier, min_interval=settings.snapshot_min_interval
        )
        self.reflectors: list[Reflector] = []
        self.started_at = time.time()
        self.last_gc: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set."""
        observed = self.backend.observe()
        self.datapath.adopt(observed)
        self._known_ips = set(observed.fingerprints)
        loaded = self.files.load(self.store)
        self._known_ips |= set(self.store.endpoints())
        log.info(
            "restored %d cache entries; kernel kept %d endpoint programs and %d selectors",
            loaded,
            len(observed.fingerprints),
            len(observed.selectors),
        )
        # The store's entries go back into the adopted sets (with their TTLs); what the
        # kernel holds beyond them expires by itself.
        self.datapath.refill_from_store()
        grpc_server = await start_server(
            self.service, self.settings.grpc_socket, self.settings.grpc_tcp_port
        )
        http_runner = await self._start_http()
        tasks = [
            asyncio.create_task(self._recompile_loop(), name="recompile"),
            asyncio.create_task(self._gc_loop(), name="gc"),
            asyncio.create_task(self._compact_loop(), name="compact"),
            asyncio.create_task(self._watch(), name="watch"),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await grpc_server.stop(1.0)
            await http_runner.cleanup()
            self.files.compact(self.store)
            self.files.close()
            if self._kube is not None:
                await self._kube.close()
            self.backend.close()
            if self._runner is not None:
                self._runner.close()

    async def _start_http(self) -> web.AppRunner:
        from acns_operator.agent.inspect import make_app

        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        return runner

    # -- watches --------------------------------------------------------------------

    async def _watch(self) -> None:
        if self._kube is None:
            self._kube = KubeClient(load_kubeconfig(self.settings.kubeconfig))
        kube = self._kube
        backoff = self.settings.kube_backoff_max
        self.reflectors = [
            Reflector(kube, NAMESPACE_PATH, on_replace=self._replace_namespaces,
                      on_event=self._namespace_event, backoff_max=backoff, name="namespaces"),
            Reflector(kube, SERVICE_PATH, on_replace=self._replace_services,
                      on_event=self._service_event, backoff_max=backoff, name="services"),
            Reflector(kube, POD_PATH, on_replace=self._replace_pods,
                      on_event=self._pod_event, backoff_max=backoff, name="pods"),
            Reflector(kube, CNP_PATH, on_replace=self._replace_policies,
                      on_event=self._policy_event, backoff_max=backoff, name="policies"),
        ]  # fmt: skip
        tasks = [asyncio.create_task(r.run(), name=r.name) for r in self.reflectors]
        try:
            await asyncio.gather(*(r.synced.wait() for r in self.reflectors))
            self._full_sync()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    def _mark(self, affected: set[str]) -> None:
        if affected:
            self._pending |= affected
            self._wake.set()

    async def _replace(
        self,
        items: list[dict[str, Any]],
        known: Iterable[str],
        remove: Callable[[str], set[str]],
        on_event: Callable[[str, dict[str, Any]], Awaitable[None]],
        key_of: Callable[[dict[str, Any]], str] = object_key,
    ) -> None:
        """A (re)list: remove what the list no longer has, then apply every item."""
        keys = {key_of(o) for o in items}
        for key in [k for k in known if k not in keys]:
            self._mark(remove(key))
        for obj in items:
            await on_event("ADDED", obj)

    async def _replace_namespaces(self, items: list[dict[str, Any]]) -> None:
        compiler = self.compiler
        await self._replace(
            items, compiler.namespaces, compiler.remove_namespace, self._namespace_event
        )

    async def _namespace_event(self, kind: str, obj: dict[str, Any]) -> None:
        name = object_key(obj)
        if kind == "DELETED":
            self._mark(self.compiler.remove_namespace(name))
        else:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            self._mark(self.compiler.set_namespace(name, labels))

    async def _replace_services(self, items: list[dict[str, Any]]) -> None:
        compiler = self.compiler
        await self._replace(items, compiler.services, compiler.remove_service, self._service_event)

    async def _service_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self._mark(self.compiler.remove_service(object_key(obj)))
        else:
            self._mark(self.compiler.set_service(service_from_object(obj)))

    async def _replace_pods(self, items: list[dict[str, Any]]) -> None:
        await self._replace(items, self.compiler.pods, self.compiler.remove_pod, self._pod_event)

    async def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        pod = pod_from_object(obj) if kind != "DELETED" else None
        if pod is None:
            self._mark(self.compiler.remove_pod(object_key(obj)))
        else:
            self._mark(self.compiler.set_pod(pod))

    async def _replace_policies(self, items: list[dict[str, Any]]) -> None:
        keys = {policy_key(o) for o in items}
        for key in [k for k in self.blocked_policies if k not in keys]:
            del self.blocked_policies[key]  # deleted while the watch was down
        await self._replace(
            items,
            self.compiler.policy_keys(),
            self.compiler.remove_policy,
            self._policy_event,
            policy_key,
        )

    async def _policy_event(self, kind: str, obj: dict[str, Any]) -> None:
        key = policy_key(obj)
        if kind == "DELETED":
            self.blocked_policies.pop(key, None)
            self._mark(self.compiler.remove_policy(key))
            return
        verdict = validate(obj, self.policy_settings)
        if verdict.admitted and verdict.policy is not None:
            self.blocked_policies.pop(key, None)
            self._mark(self.compiler.set_policy(verdict.policy))
        else:
            # Never enforced, whether or not the operator is running.
            self.blocked_policies[key] = verdict.messages()
            self._mark(self.compiler.remove_policy(key))

    # -- compilation ----------------------------------------------------------------

    def _full_sync(self) -> None:
        # Everything listed so far is long-lived: take it out of the cyclic GC's reach
        # before compiling (full collections over it would double the compile time).
        gc.freeze()
        started = time.perf_counter()
        self._pending.clear()
        self.rules = self.compiler.compile_all()
        self.compiler.tracking = True
        programs = {r.ip: to_program(r) for r in self.rules.values()}
        self.datapath.set_programs(programs)
        local_ips = {
            p.ip for k in self.compiler.local_endpoints() if (p := self.compiler.pods[k]).ip
        }
        self._known_ips = local_ips
        for endpoint in self.store.endpoints():
            if endpoint not in local_ips:
                self.datapath.on_names_changed(self.store.forget_endpoint(endpoint))
        self._endpoint_policies = {
            key: to_endpoint_policy(r, self.policy_settings.cluster_domain)
            for key, r in self.rules.items()
            if r.dns  # endpoints without DNS rules are not redirected to the proxy
        }
        self._publish()
        self.metrics.compile_seconds.labels("full").observe(time.perf_counter() - started)
        self.synced.set()
        # Long-lived state (policies, cache, sets) leaves the cyclic GC's generations:
        # full collections over millions of objects would stall mapping replies.
        gc.freeze()
        log.info("synced: %d local endpoints with egress rules", len(self.rules))

    async def _recompile_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Let a burst of events (a relist, a rollout) gather into one pass.
            await asyncio.sleep(0.02)
            if not self.synced.is_set() or not self._pending:
                continue
            pending, self._pending = self._pending, set()
            try:
                self.recompile(pending)
            except Exception:
                # The kernel refused a transaction (or another bug): our view of the
                # datapath may be off. Read the kernel back and converge again.
                log.exception("applying a recompile failed; resynchronising the datapath")
                self.metrics.datapath_errors.inc()
                await asyncio.sleep(1.0)
                try:
                    self.resync_datapath()
                except Exception:
                    log.exception("resynchronising the datapath failed; retrying later")
                    self._pending |= pending
                    self._wake.set()

    def resync_datapath(self) -> None:
        """Adopt what the kernel holds now and converge it to the compiled programs."""
        self.datapath = Datapath(self.backend, self.store, self.clock)
        self.applier.datapath = self.datapath
        self.datapath.adopt(self.backend.observe())
        self.datapath.refill_from_store()
        self.rules = self.compiler.compile_all()
        self.datapath.set_programs({r.ip: to_program(r) for r in self.rules.values()})
        self._endpoint_policies = {
            key: to_endpoint_policy(r, self.policy_settings.cluster_domain)
            for key, r in self.rules.items()
            if r.dns  # endpoints without DNS rules are not redirected to the proxy
        }
        self._publish()

    def recompile(self, keys: set[str]) -> None:
        """Recompile some endpoints and apply the difference."""
        started = time.perf_counter()
        changes: dict[str, EndpointProgram | None] = {}
        for key in sorted(keys):
            old = self.rules.get(key)
            new = self.compiler.compile(key)
            if old is not None and (new is None or new.ip != old.ip):
                changes[old.ip] = None
                self._endpoint_policies.pop(key, None)
                self.rules.pop(key, None)
            if new is not None:
                self.rules[key] = new
                changes[new.ip] = to_program(new)
                if new.dns:
                    self._endpoint_policies[key] = to_endpoint_policy(
                        new, self.policy_settings.cluster_domain
                    )
                else:
                    self._endpoint_policies.pop(key, None)
        self.datapath.update_programs(changes)
        local_ips = {
            p.ip for k in self.compiler.local_endpoints() if (p := self.compiler.pods[k]).ip
        }
        for gone in self._known_ips - local_ips:
            self.datapath.on_names_changed(self.store.forget_endpoint(gone))
        self._known_ips = local_ips
        self._publish()
        self.metrics.compile_seconds.labels("incremental").observe(time.perf_counter() - started)

    def _publish(self) -> None:
        self.hub.publish([self._endpoint_policies[k] for k in sorted(self._endpoint_policies)])

    # -- GC and persistence ---------------------------------------------------------

    def gc_once(self) -> None:
        """One DNS GC run with conntrack liveness."""
        live = self.conntrack.live_connections() if self.conntrack is not None else set()
        result = self.store.gc(live)
        update = self.datapath.on_gc(result)
        self.last_gc = {
            "at": self.clock.now(),
            "deleted_names": len(result.deleted_names),
            "new_zombies": result.new_zombies,
            "dead_zombies": result.dead_zombies,
            "evicted_zombies": result.evicted_zombies,
            "removed_elements": len(update.removed_elements),
        }
        gc.freeze()

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gc_interval)
            try:
                self.gc_once()
            except Exception:
                log.exception("DNS GC failed")

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.state_compact_interval)
            try:
                self.files.compact(self.store)
            except OSError:
                log.exception("writing the state file failed")

    # -- inspection -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The agent's state for ``/v1/status``."""
        return {
            "node": self.settings.node_name,
            "backend": self.backend.name,
            "synced": self.synced.is_set(),
            "endpoints": len(self.rules),
            "known_endpoint_ips": sorted(self._known_ips),
            "snapshot_revision": self.hub.revision,
            "proxies": [
                {"peer": s.peer, "sent": s.sent_revision, "acked": s.acked_revision}
                for s in self.hub.streams
            ],
            "blocked_policies": self.blocked_policies,
            "selectors": sorted(self.datapath.elements),
            "last_gc": self.last_gc,
            "watches": {
                r.name: {"synced": r.synced.is_set(), "relists": r.relists, "failures": r.failures}
                for r in self.reflectors
            },
        }


def run_agent(
    settings: AgentSettings,
    policy_settings: PolicySettings,
    *,
    install_signals: bool = True,
    ready: Callable[[Agent], None] | None = None,
) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        if install_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        agent = Agent(settings, policy_settings)
        if ready is not None:
            ready(agent)
        await agent.run(stop)

    asyncio.run(main())
