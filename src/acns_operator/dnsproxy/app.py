"""Wiring and lifecycle of the ``acns dnsproxy`` program.

Start: load the persisted snapshot (standalone: the rules file, required), open the
upstream pool, bind the UDP and TCP listeners with SO_REUSEPORT (a second proxy on the
same port shares the load during a rolling update), connect to the agent in the
background, serve ``/metrics``, ``/healthz`` and ``/readyz``.

Stop (SIGTERM, SIGINT or the injected ``shutdown`` event): not ready; the UDP
listener leaves the SO_REUSEPORT group (so the kernel sends new queries to the other
proxy) but keeps its socket to answer what it already has; TCP accepts what the kernel
completed, stops accepting and closes idle connections; queries in flight (upstream,
agent holds, TCP) get up to ``shutdown_grace`` seconds; then everything closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from acns_operator.dnsproxy import wire
from acns_operator.dnsproxy.agent_link import AgentLink
from acns_operator.dnsproxy.metrics import ProxyMetrics
from acns_operator.dnsproxy.rules import (
    EMPTY,
    RuleSet,
    compile_snapshot,
    load_snapshot,
    save_snapshot,
    to_snapshot_model,
)
from acns_operator.dnsproxy.server import (
    DnsProxy,
    ProxyOptions,
    TcpListener,
    UdpListener,
    listening_socket,
    parse_host_port,
)
from acns_operator.dnsproxy.upstream import UdpUpstream
from acns_operator.errors import ConfigurationError, InputError
from acns_operator.proto import fqdndata_pb2 as pb
from acns_operator.settings import DnsProxySettings

log = logging.getLogger(__name__)


def options_from(settings: DnsProxySettings) -> ProxyOptions:
    """The pipeline options a settings object describes."""
    return ProxyOptions(
        reject_rcode=wire.NXDOMAIN
        if settings.reject_response_code == "nameError"
        else wire.REFUSED,
        upstream=parse_host_port(settings.upstream) if settings.upstream else None,
        upstream_timeout=settings.upstream_timeout,
        max_delay=settings.proxy_response_max_delay,
        search_suffix_help=settings.search_suffix_help,
        denied_log_per_second=settings.denied_log_per_second,
    )


def initial_rules(settings: DnsProxySettings) -> RuleSet:
    """The rules to serve before the agent speaks: the persisted (or standalone) snapshot."""
    path = Path(settings.rules_file)
    standalone = not settings.agent_address
    if not path.exists():
        if standalone:
            raise ConfigurationError(f"standalone mode needs a rules file; {path} does not exist")
        log.info(
            "no persisted snapshot at %s; SERVFAIL for every query until the agent speaks", path
        )
        return EMPTY
    try:
        ruleset = compile_snapshot(load_snapshot(path))
    except InputError:
        if standalone:
            raise
        log.exception("ignoring the persisted snapshot")
        return EMPTY
    for problem in ruleset.problems:
        log.warning("snapshot: %s", problem)
    log.info("loaded %d endpoints (revision %d) from %s", len(ruleset), ruleset.revision, path)
    return ruleset


def snapshot_handler(
    proxy: DnsProxy, path: Path | None
) -> Callable[[pb.PolicyState], tuple[int, str]]:
    """Build the callback that compiles, swaps in and persists an agent snapshot."""

    def apply(state: pb.PolicyState) -> tuple[int, str]:
        started = time.perf_counter()
        try:
            model = to_snapshot_model(state)
        except InputError as exc:
            return pb.RESPONSE_CODE_ERROR_INVALID_ARGUMENT, str(exc)
        ruleset = compile_snapshot(model)
        proxy.set_rules(ruleset)
        # keep the new rules out of the collector's way (see ProxyApp.start)
        gc.freeze()
        message = "; ".join(ruleset.problems[:5])
        if path is not None:
            try:
                save_snapshot(model, path)
            except OSError as exc:
                log.error("cannot persist the snapshot to %s: %s", path, exc)
                message = f"applied but not persisted: {exc}"
        log.info(
            "snapshot %s (revision %d): %d endpoints in %.1f ms",
            state.request_id,
            state.revision,
            len(ruleset),
            (time.perf_counter() - started) * 1000,
        )
        code = (
            pb.RESPONSE_CODE_ERROR_INVALID_ARGUMENT
            if ruleset.problems
            else pb.RESPONSE_CODE_NO_ERROR
        )
        return code, message

    return apply


class ProxyApp:
    """One running proxy: listeners, upstream, agent link and HTTP endpoints."""

    def __init__(
        self, settings: DnsProxySettings, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ProxyMetrics(self.registry)
        self.proxy: DnsProxy | None = None
        self.agent: AgentLink | None = None
        self.udp: UdpListener | None = None
        self.tcp: TcpListener | None = None
        self.upstream: UdpUpstream | None = None
        self.ready = False
        self._http: web.AppRunner | None = None

    async def start(self) -> None:
        """Load rules, bind listeners, connect to the agent, serve HTTP."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        options = options_from(settings)
        rules = initial_rules(settings)
        self.upstream = UdpUpstream(
            loop,
            self.metrics,
            sockets=settings.upstream_udp_sockets,
            timeout=settings.upstream_timeout,
            max_inflight=settings.max_inflight,
        )
        self.proxy = DnsProxy(options, self.metrics, self.upstream, rules=rules)
        if settings.agent_address:
            self.agent = AgentLink(
                settings.agent_address,
                self.metrics,
                snapshot_handler(self.proxy, Path(settings.rules_file)),
                queue_size=settings.mapping_queue_size,
                dedup_entries=settings.mapping_dedup_entries,
                reconnect_interval=settings.agent_reconnect_interval,
            )
            self.proxy.agent = self.agent
        udp_sock = listening_socket(
            socket.SOCK_DGRAM,
            settings.listen_address,
            settings.port,
            transparent=settings.transparent,
        )
        self.udp = UdpListener(self.proxy, udp_sock, transparent=settings.transparent)
        if settings.enable_tcp:
            tcp_sock = listening_socket(
                socket.SOCK_STREAM,
                settings.listen_address,
                settings.port,
                transparent=settings.transparent,
            )
            self.tcp = TcpListener(self.proxy, tcp_sock)
            await self.tcp.start()
        if self.agent is not None:
            self.agent.start()
        if settings.metrics_port:
            await self._start_http()
        # A full garbage collection walks every object: with 1,000 policies' rules
        # loaded that is ~27 ms, a pause every query in flight would pay. Freezing
        # what exists now (rules, modules) leaves only new objects to collect.
        gc.collect()
        gc.freeze()
        self.ready = True
        log.info(
            "dnsproxy listening on %s:%d (udp%s), upstream %s, agent %s",
            settings.listen_address,
            settings.port,
            "+tcp" if self.tcp else "",
            settings.upstream or "original destination",
            settings.agent_address or "none (standalone)",
        )

    async def _start_http(self) -> None:
        app = web.Application()

        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        async def readyz(_: web.Request) -> web.Response:
            if self.ready:
                return web.Response(text="ready\n")
            return web.Response(status=503, text="not ready\n")

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        site = web.TCPSite(
            self._http, self.settings.metrics_address, self.settings.metrics_port, reuse_port=True
        )
        await site.start()

    def busy(self) -> int:
        """Queries still being answered (upstream in flight, held, TCP)."""
        if self.proxy is None or self.upstream is None:
            return 0
        return self.upstream.inflight + self.proxy.holds + self.proxy.tcp_inflight

    async def stop(self) -> None:
        """Graceful stop (see the module doc)."""
        self.ready = False
        grace = self.settings.shutdown_grace
        if self.udp is not None:
            self.udp.leave_group()
        if self.tcp is not None:
            self.tcp.stop_accepting()
        deadline = time.monotonic() + grace
        # three independent counters; polling every 10 ms while stopping costs nothing
        while self.busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self.busy():
            log.warning("stopping with %d queries unanswered", self.busy())
        if self.tcp is not None:
            await self.tcp.close(max(0.0, deadline - time.monotonic()))
        if self.udp is not None:
            self.udp.close()
        if self.agent is not None:
            await self.agent.close()
        if self.upstream is not None:
            self.upstream.close()
        if self._http is not None:
            await self._http.cleanup()
        log.info("dnsproxy stopped")


async def serve(
    settings: DnsProxySettings,
    *,
    registry: CollectorRegistry | None = None,
    shutdown: asyncio.Event | None = None,
) -> None:
    """Run the proxy until SIGTERM/SIGINT (or ``shutdown`` is set), then stop gracefully."""
    loop = asyncio.get_running_loop()
    stop = shutdown or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    app = ProxyApp(settings, registry)
    try:
        await app.start()
        await stop.wait()
    finally:
        await app.stop()
