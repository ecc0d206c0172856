"""Assemble and run the operator: kopf embedded with our settings, plus our own tasks.

:func:`run_operator` builds everything from one :class:`OperatorSettings` (no
module-level state, a fresh kopf registry), then runs ``kopf.operator(...)`` next to
the tasks kopf does not provide: the leader elector, the status writer, TLS
renewal, webhook registration and the health/metrics server. It returns when
``stop`` is set or kopf stops (SIGINT/SIGTERM when run in the main thread), after
releasing the Lease and, if configured, unregistering the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import kopf
from prometheus_client import CollectorRegistry

from acns_operator.errors import ConfigurationError, UpstreamError
from acns_operator.operator.clock import Clock, utcnow
from acns_operator.operator.connection import Connection, load_connection
from acns_operator.operator.handlers import HandlerDeps, build_registry
from acns_operator.operator.health import Health, build_health_app, start_health_server
from acns_operator.operator.judgement import Judge
from acns_operator.operator.kube import KubeClient
from acns_operator.operator.leader import LeaderElector
from acns_operator.operator.manifests import (
    build_validating_webhook_configuration,
    certificate_hosts,
    webhook_base_url,
)
from acns_operator.operator.metrics import OperatorMetrics
from acns_operator.operator.reconciler import Reconciler
from acns_operator.operator.tls import TlsKeeper
from acns_operator.operator.validation import make_judge
from acns_operator.operator.webhook import AdmissionServer, ensure_registered, unregister
from acns_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

REGISTER_RETRY = 2.0


def check_settings(settings: OperatorSettings) -> None:
    """Reject combinations that would misbehave at run time, before anything starts."""
    if settings.lease_renew_deadline >= settings.lease_duration:
        raise ConfigurationError(
            "lease_renew_deadline must be shorter than lease_duration, or two replicas "
            "could both write status"
        )
    if settings.lease_retry_period >= settings.lease_renew_deadline:
        raise ConfigurationError("lease_retry_period must be shorter than lease_renew_deadline")
    if settings.tls_renew_before >= settings.tls_certificate_validity:
        raise ConfigurationError(
            "tls_renew_before must be shorter than tls_certificate_validity, or every "
            "check would issue a new certificate"
        )
    if settings.tls_renew_before >= settings.tls_ca_validity:
        raise ConfigurationError("tls_renew_before must be shorter than tls_ca_validity")
    if settings.webhook_enabled and settings.webhook_register:
        webhook_base_url(settings)  # raises when the API server could not reach it


class DenialLogFilter(logging.Filter):
    """Drops kopf's ERROR record for every denied admission: a denial is the webhook
    doing its job (counted in the metrics and logged by our handler at INFO), not a
    failure of the operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep everything except kopf's "Webhook ... failed permanently" lines."""
        message = record.getMessage()
        return not (message.startswith("Webhook '") and "failed permanently" in message)


def install_log_filters() -> None:
    """Attach :class:`DenialLogFilter` to kopf's per-object logger, once."""
    kopf_objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, DenialLogFilter) for f in kopf_objects.filters):
        kopf_objects.addFilter(DenialLogFilter())


def default_identity() -> str:
    """Host name (the pod name in a cluster) plus a random suffix, unique per start."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


def build_kopf_settings(
    settings: OperatorSettings, server: AdmissionServer | None
) -> kopf.OperatorSettings:
    """kopf's settings, derived from ours."""
    kopf_settings = kopf.OperatorSettings()
    # kopf would turn handler log lines into Events; we post our own, and only those.
    kopf_settings.posting.enabled = False
    kopf_settings.peering.standalone = True  # leadership is our Lease, not kopf peering
    kopf_settings.admission.server = server
    kopf_settings.admission.managed = None  # registered by us, see webhook.ensure_registered
    # Long server-side watches with a client timeout just above them, so a silently
    # dead connection is noticed and the watch (and its listing) restarts.
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.connect_timeout = 30
    kopf_settings.networking.request_timeout = 60
    return kopf_settings


@dataclass
class _Tasks:
    """Our own background tasks, stopped together."""

    running: list[asyncio.Task[None]] = field(default_factory=list)

    def spawn(self, name: str, coro: Awaitable[None]) -> asyncio.Task[None]:
        async def wrapped() -> None:
            await coro

        task = asyncio.create_task(wrapped(), name=name)
        self.running.append(task)
        return task

    async def stop(self) -> None:
        for task in self.running:
            task.cancel()
        for task in self.running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _keep_registered(
    server: AdmissionServer,
    register: Callable[[bytes], Awaitable[None]],
    tls: TlsKeeper,
    interval: float,
) -> None:
    """Register once the endpoint answers, then check it again every ``interval``.

    The re-check puts back a configuration someone deleted or edited; it is a single
    GET when nothing changed. Failures are retried sooner.
    """
    await server.serving.wait()
    while True:
        try:
            await register(tls.ca_bundle)
        except UpstreamError as exc:
            logger.warning("registering the webhook failed, retrying: %s", exc)
            await asyncio.sleep(min(REGISTER_RETRY, interval))
            continue
        await asyncio.sleep(interval)


async def run_operator(
    settings: OperatorSettings,
    *,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    judge: Judge | None = None,
    connection: Connection | None = None,
    clock: Clock = utcnow,
) -> None:
    """Run the operator until ``stop`` is set (or a signal stops kopf)."""
    check_settings(settings)
    install_log_filters()
    connection = connection or load_connection(settings.kubeconfig, settings.context)
    identity = settings.identity or default_identity()
    metrics = OperatorMetrics(registry if registry is not None else CollectorRegistry())
    judge = judge or make_judge(settings.policy)
    stop = stop or asyncio.Event()
    health = Health()
    tasks = _Tasks()
    elector: LeaderElector | None = None
    async with KubeClient(connection) as client:
        reconciler = Reconciler(
            client=client,
            judge=judge,
            metrics=metrics,
            component=settings.event_component,
            instance=identity,
            backoff=settings.reconcile_backoff,
            backoff_max=settings.reconcile_backoff_max,
            clock=clock,
        )
        server: AdmissionServer | None = None
        if settings.webhook_enabled:
            tls = TlsKeeper(
                client=client, settings=settings, hosts=certificate_hosts(settings), clock=clock
            )
            await tls.start()
            assert tls.material is not None
            expiry = tls.material.certificate().not_valid_after_utc.timestamp()
            metrics.webhook_certificate_expiry.set(expiry)
            url = webhook_base_url(settings)
            server = AdmissionServer(
                host=settings.webhook_host,
                port=settings.webhook_port,
                tls=tls,
                metrics=metrics,
                client_config=kopf.WebhookClientConfig(url=url) if url else {},
            )
            health.webhook_serving = server.serving.is_set

            async def register(ca_bundle: bytes) -> None:
                desired = build_validating_webhook_configuration(settings, ca_bundle)
                await ensure_registered(client, desired)

            async def on_renewed(ca_bundle: bytes) -> None:
                assert tls.material is not None
                expiry = tls.material.certificate().not_valid_after_utc.timestamp()
                metrics.webhook_certificate_expiry.set(expiry)
                if settings.webhook_register:
                    await register(ca_bundle)

            tls.on_ca_change(on_renewed)
            tasks.spawn("tls-renewal", tls.run())
            if settings.webhook_register:
                tasks.spawn(
                    "webhook-registration",
                    _keep_registered(server, register, tls, settings.tls_check_interval),
                )

        app = build_health_app(health, metrics.registry)
        health_runner, health_port = await start_health_server(
            app, settings.health_host, settings.health_port
        )
        health.tasks.append(tasks.spawn("status-writer", reconciler.run()))
        if settings.leader_election:
            elector = LeaderElector(
                client=client,
                namespace=settings.operator_namespace,
                name=settings.lease_name,
                identity=identity,
                lease_duration=settings.lease_duration,
                renew_deadline=settings.lease_renew_deadline,
                retry_period=settings.lease_retry_period,
                on_started_leading=reconciler.lead,
                on_stopped_leading=reconciler.follow,
            )
            health.tasks.append(tasks.spawn("leader-election", elector.run()))
        else:
            reconciler.lead()

        async def announce_ready() -> None:
            await health.started.wait()
            if server is not None:
                await server.serving.wait()
            logger.info(
                "acns operator %s ready (health and metrics on port %d)", identity, health_port
            )
            if ready is not None:
                ready.set()

        tasks.spawn("ready", announce_ready())
        kopf_registry = build_registry(
            HandlerDeps(
                connection=connection,
                judge=judge,
                reconciler=reconciler,
                webhook=settings.webhook_enabled,
            )
        )
        try:
            await kopf.operator(
                registry=kopf_registry,
                settings=build_kopf_settings(settings, server),
                standalone=True,
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                stop_flag=stop,
                ready_flag=health.started,
            )
        finally:
            await tasks.stop()
            if elector is not None:
                await elector.release()
            if settings.webhook_enabled and settings.webhook_unregister_on_exit:
                with contextlib.suppress(UpstreamError):
                    await unregister(client, settings.webhook_configuration_name)
            await health_runner.cleanup()
            logger.info("acns operator %s stopped", identity)
