"""/healthz, /readyz and /metrics: what kubelet and Prometheus see."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client import CollectorRegistry

from acns_operator.operator.health import Health, build_health_app, start_health_server
from acns_operator.operator.metrics import OperatorMetrics


async def test_readiness_waits_for_kopf_and_the_webhook_while_liveness_does_not() -> None:
    registry = CollectorRegistry()
    OperatorMetrics(registry).admission_requests.labels("CiliumNetworkPolicy", "CREATE", "denied")
    serving = asyncio.Event()
    health = Health(webhook_serving=serving.is_set)
    runner, port = await start_health_server(build_health_app(health, registry), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def status(path: str) -> tuple[int, str]:
                async with session.get(base + path) as response:
                    return response.status, await response.text()

            assert (await status("/healthz"))[0] == 200
            code, text = await status("/readyz")
            assert code == 503
            assert "has not started" in text
            assert "webhook is not serving" in text
            health.started.set()
            serving.set()
            assert await status("/readyz") == (200, "ok\n")
            code, text = await status("/metrics")
            assert code == 200
            assert "acns_admission_requests_total" in text
    finally:
        await runner.cleanup()


async def test_a_dead_core_task_fails_liveness() -> None:
    async def crash() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(crash(), name="status-writer")
    await asyncio.gather(task, return_exceptions=True)
    health = Health(tasks=[task])
    assert health.problems(readiness=False) == ["task status-writer stopped"]
