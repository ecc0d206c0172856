"""The agent's list+watch reflector: relist on 410 Gone, keep state while failing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from acns_operator.agent.app import pod_from_object, service_from_object
from acns_operator.agent.kube import GoneError, Reflector, load_kubeconfig
from acns_operator.errors import ConfigurationError, UpstreamError


class FakeClient:
    """Scripted lists and watches; each watch call pops the next script step."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.list_calls = 0

    async def list(self, path: str) -> tuple[list[dict[str, Any]], str]:
        self.list_calls += 1
        return self.lists.pop(0), f"rv{self.list_calls}"

    async def watch(
        self,
        path: str,
        resource_version: str,
        on_event: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> str:
        step = self.watches.pop(0) if self.watches else asyncio.sleep(3600)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, tuple):
            await on_event(*step)
            return resource_version
        await step
        return resource_version


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name}}


async def run_until(reflector: Reflector, done: Callable[[], bool]) -> None:
    task = asyncio.create_task(reflector.run())
    for _ in range(200):
        if done():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_410_gone_watch_lists_again_and_events_flow_in_between() -> None:
    replaced: list[list[str]] = []
    events: list[tuple[str, str]] = []

    async def on_replace(items: list[dict[str, Any]]) -> None:
        replaced.append([i["metadata"]["name"] for i in items])

    async def on_event(kind: str, obj: dict[str, Any]) -> None:
        events.append((kind, obj["metadata"]["name"]))

    client = FakeClient(
        lists=[[pod("a")], [pod("a"), pod("b")]],
        watches=[("ADDED", pod("b")), GoneError("410")],
    )
    reflector = Reflector(client, "/api/v1/pods", on_replace=on_replace, on_event=on_event)  # type: ignore[arg-type]
    await run_until(reflector, lambda: len(replaced) == 2)
    assert replaced == [["a"], ["a", "b"]]
    assert events == [("ADDED", "b")]
    assert reflector.synced.is_set()


async def test_a_failing_api_server_is_retried_with_backoff_and_nothing_is_replaced() -> None:
    replaced: list[int] = []

    async def on_replace(items: list[dict[str, Any]]) -> None:
        replaced.append(len(items))

    async def on_event(kind: str, obj: dict[str, Any]) -> None:
        raise AssertionError("no events expected")

    client = FakeClient(lists=[[pod("a")], [pod("a")]], watches=[UpstreamError("down")])
    reflector = Reflector(
        client,  # type: ignore[arg-type]
        "/api/v1/pods",
        on_replace=on_replace,
        on_event=on_event,
        backoff_max=0.05,
    )
    await run_until(reflector, lambda: reflector.failures >= 1 and len(replaced) == 2)
    assert reflector.failures == 1
    assert replaced == [1, 1]


async def test_a_callback_that_raises_does_not_kill_the_reflector() -> None:
    replaced: list[int] = []
    events: list[str] = []

    async def on_replace(items: list[dict[str, Any]]) -> None:
        replaced.append(len(items))

    async def on_event(kind: str, obj: dict[str, Any]) -> None:
        events.append(obj["metadata"]["name"])  # KeyError on a malformed object

    client = FakeClient(
        lists=[[pod("a")], [pod("a"), pod("b")]],
        watches=[("ADDED", {"no": "metadata"}), ("ADDED", pod("c"))],
    )
    reflector = Reflector(
        client,  # type: ignore[arg-type]
        "/api/v1/pods",
        on_replace=on_replace,
        on_event=on_event,
        backoff_max=0.05,
    )
    await run_until(reflector, lambda: events == ["c"])
    assert reflector.failures == 1
    assert replaced == [1, 2], "listed again after the failure"
    assert events == ["c"], "events flow after the relist"


def test_a_kubeconfig_with_embedded_certificates_is_read(tmp_path: Path) -> None:
    import base64

    from acns_operator.local.certs import CertificateAuthority

    authority = CertificateAuthority.create("test-ca")
    client = authority.issue_client("agent", ["system:nodes"])
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://127.0.0.1:6443/",
                    "certificate-authority-data": base64.b64encode(authority.cert_pem).decode(),
                },
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": base64.b64encode(client.cert_pem).decode(),
                    "client-key-data": base64.b64encode(client.key_pem).decode(),
                },
            }
        ],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(document))
    config = load_kubeconfig(str(tmp_path / "kubeconfig"))
    try:
        assert config.server == "https://127.0.0.1:6443"
        assert config.token is None
        written = [Path(path) for path in config._temp_files]
        assert len(written) == 3, "CA, certificate and key written for ssl"
        assert all(path.exists() for path in written)
    finally:
        config.close()
    assert not any(path.exists() for path in written), "temporary key files are removed"


def test_a_missing_kubeconfig_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigurationError):
        load_kubeconfig(None)


def test_finished_pods_are_dropped_and_services_keep_their_selector() -> None:
    running = {
        "metadata": {"namespace": "ns", "name": "a", "labels": {"app": "x"}},
        "spec": {"nodeName": "node1"},
        "status": {"phase": "Running", "podIP": "10.244.1.10", "hostIP": "10.244.254.1"},
    }
    parsed = pod_from_object(running)
    assert parsed is not None
    assert (parsed.key, parsed.ip, parsed.node, parsed.host_ip) == (
        "ns/a", "10.244.1.10", "node1", "10.244.254.1",
    )  # fmt: skip
    assert pod_from_object(running | {"status": {"phase": "Succeeded"}}) is None
    service = service_from_object(
        {
            "metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "spec": {"clusterIP": "10.244.250.10", "selector": {"k8s-app": "kube-dns"}},
        }
    )
    assert service.cluster_ip == "10.244.250.10"
    assert service.selector == {"k8s-app": "kube-dns"}
