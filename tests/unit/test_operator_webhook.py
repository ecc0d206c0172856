"""The admission endpoint over real TLS, and the shared, renewed serving certificate."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import kopf
import pytest
from prometheus_client import CollectorRegistry

from acns_operator.errors import ConfigurationError
from acns_operator.operator.memory import MemoryKubeApi
from acns_operator.operator.metrics import OperatorMetrics
from acns_operator.operator.tls import TlsKeeper
from acns_operator.operator.webhook import (
    VWC_PATH,
    AdmissionServer,
    classify_response,
    ensure_registered,
    unregister,
)
from acns_operator.settings import OperatorSettings

TLS_PATH = "/api/v1/namespaces/acns-system/secrets/acns-operator-webhook-tls"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keeper(api: MemoryKubeApi, clock: Clock, **changes: Any) -> TlsKeeper:
    settings = OperatorSettings(
        webhook_host="127.0.0.1",
        tls_certificate_validity=3600,
        tls_renew_before=600,
        **changes,
    )
    return TlsKeeper(client=api, settings=settings, hosts=["127.0.0.1"], clock=clock)


async def test_the_first_replica_generates_the_material_and_the_second_reuses_it() -> None:
    api, clock = MemoryKubeApi(), Clock()
    first, second = keeper(api, clock), keeper(api, clock)
    await first.start()
    await second.start()
    assert first.material == second.material
    assert api.objects[TLS_PATH]["type"] == "kubernetes.io/tls"
    assert set(api.objects[TLS_PATH]["data"]) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}


async def test_a_refresh_near_expiry_renews_once_and_reports_no_ca_change() -> None:
    api, clock = MemoryKubeApi(), Clock()
    first, second = keeper(api, clock), keeper(api, clock)
    await first.start()
    await second.start()
    changes: list[bytes] = []

    async def listener(bundle: bytes) -> None:
        changes.append(bundle)

    first.on_ca_change(listener)
    before = first.material
    assert before is not None
    clock.now += timedelta(seconds=3100)
    assert await first.refresh()
    assert await second.refresh()  # picks up the certificate the first one stored
    assert first.material == second.material != before
    assert changes == []  # same CA: the registered caBundle stays valid


async def test_secret_mode_without_the_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        await keeper(MemoryKubeApi(), Clock(), tls_source="secret").start()


async def test_secret_mode_reads_what_cert_manager_wrote_and_never_writes() -> None:
    api, clock = MemoryKubeApi(), Clock()
    await keeper(api, clock).start()  # stands in for cert-manager
    api.calls.clear()
    reader = keeper(api, clock, tls_source="secret")
    await reader.start()
    assert {method for method, _ in api.calls} == {"get"}


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, ssl.SSLContext, CollectorRegistry]]:
    api, clock = MemoryKubeApi(), Clock()
    tls = keeper(api, clock)
    await tls.start()
    registry = CollectorRegistry()
    port = free_port()
    server = AdmissionServer(
        host="127.0.0.1",
        port=port,
        tls=tls,
        metrics=OperatorMetrics(registry),
        client_config=kopf.WebhookClientConfig(url=f"https://127.0.0.1:{port}"),
    )

    async def fn(request: Any, **kwargs: Any) -> Any:
        uid = request["request"]["uid"]
        if kwargs["webhook"] == "validate-deny":
            return {"response": {"uid": uid, "allowed": False, "status": {"message": "no"}}}
        return {"response": {"uid": uid, "allowed": True, "warnings": ["careful"]}}

    configs = server(fn)
    config = await anext(configs)
    assert config["url"] == f"https://127.0.0.1:{port}"

    async def keep_serving() -> None:
        await anext(configs)

    task = asyncio.create_task(keep_serving())
    await server.serving.wait()
    assert tls.material is not None
    client = ssl.create_default_context(cadata=tls.material.ca_bundle_pem.decode())
    try:
        yield f"https://127.0.0.1:{port}", client, registry
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def review(uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": "CREATE", "kind": {"kind": "CiliumNetworkPolicy"}},
    }


async def test_reviews_are_answered_over_tls_and_counted_by_verdict(
    served: tuple[str, ssl.SSLContext, CollectorRegistry],
) -> None:
    url, context, registry = served
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.post(f"{url}/validate-cnp", json=review()) as response:
            answer = await response.json()
        async with session.post(f"{url}/validate-deny", json=review("u-2")) as response:
            denied = await response.json()
        async with session.post(f"{url}/validate-cnp", data=b"not json") as response:
            assert response.status == 400
    assert answer["response"] == {"uid": "u-1", "allowed": True, "warnings": ["careful"]}
    assert denied["response"]["allowed"] is False
    labels = {"kind": "CiliumNetworkPolicy", "operation": "CREATE"}
    assert (
        registry.get_sample_value("acns_admission_requests_total", labels | {"verdict": "warned"})
        == 1
    )
    assert (
        registry.get_sample_value("acns_admission_requests_total", labels | {"verdict": "denied"})
        == 1
    )
    count = registry.get_sample_value(
        "acns_admission_duration_seconds_count", {"kind": "CiliumNetworkPolicy"}
    )
    assert count == 2


def test_answers_are_classified_as_admitted_warned_or_denied() -> None:
    assert classify_response({"response": {"allowed": True}}) == "admitted"
    assert classify_response({"response": {"allowed": True, "warnings": ["w"]}}) == "warned"
    assert classify_response({"response": {"allowed": False}}) == "denied"
    assert classify_response({}) == "denied"


async def test_registration_creates_then_leaves_an_identical_configuration_alone() -> None:
    api = MemoryKubeApi()
    desired = {"metadata": {"name": "acns", "labels": {"a": "b"}}, "webhooks": [{"name": "w"}]}
    assert await ensure_registered(api, desired)
    assert not await ensure_registered(api, desired)
    changed = {**desired, "webhooks": [{"name": "w", "failurePolicy": "Ignore"}]}
    assert await ensure_registered(api, changed)
    assert api.objects[f"{VWC_PATH}/acns"]["webhooks"][0]["failurePolicy"] == "Ignore"
    await unregister(api, "acns")
    await unregister(api, "acns")  # absent is fine
    assert f"{VWC_PATH}/acns" not in api.objects
