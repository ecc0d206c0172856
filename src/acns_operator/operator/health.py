"""``/healthz``, ``/readyz`` and ``/metrics`` on a plain-HTTP port.

Separate from the webhook's HTTPS port so kubelet probes and Prometheus scrapes need
no certificates. Liveness means the event loop answers and no core task has died;
readiness means kopf has started and, when enabled, the webhook is serving, so a
Service only sends admission requests to replicas that can answer them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp.web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)


@dataclass
class Health:
    """What the probes report, filled in by the runner as parts come up."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    webhook_serving: Callable[[], bool] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def problems(self, *, readiness: bool) -> list[str]:
        """Why the operator is not live (or not ready); empty when it is."""
        found = [f"task {task.get_name()} stopped" for task in self.tasks if task.done()]
        if readiness:
            if not self.started.is_set():
                found.append("the operator has not started yet")
            if self.webhook_serving is not None and not self.webhook_serving():
                found.append("the admission webhook is not serving")
        return found


def build_health_app(health: Health, registry: CollectorRegistry) -> aiohttp.web.Application:
    """The aiohttp application with the three endpoints."""

    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return _answer(health.problems(readiness=False))

    async def readyz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return _answer(health.problems(readiness=True))

    async def metrics(_: aiohttp.web.Request) -> aiohttp.web.Response:
        body = generate_latest(registry)
        return aiohttp.web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = aiohttp.web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _answer(problems: list[str]) -> aiohttp.web.Response:
    if problems:
        return aiohttp.web.Response(status=503, text="\n".join(problems) + "\n")
    return aiohttp.web.Response(text="ok\n")


async def start_health_server(
    app: aiohttp.web.Application, host: str, port: int
) -> tuple[aiohttp.web.AppRunner, int]:
    """Start serving; returns the runner (to clean up) and the bound port."""
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    logger.info("health and metrics on http://%s:%d", host, bound)
    return runner, bound
