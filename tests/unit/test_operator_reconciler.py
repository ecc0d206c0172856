"""The status writer writes only differences, posts each Event once, and only leads once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from acns_operator.operator.judgement import Issue, Judgement
from acns_operator.operator.kube import KubeApiError
from acns_operator.operator.memory import MemoryKubeApi
from acns_operator.operator.metrics import OperatorMetrics
from acns_operator.operator.reconciler import PolicyKey, Reconciler
from acns_operator.operator.validation import make_judge
from acns_operator.settings import PolicySettings

CNP_PATH = "/apis/cilium.io/v2/namespaces/ns/ciliumnetworkpolicies"
EVENTS = "/api/v1/namespaces/ns/events"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def judge(body: Mapping[str, Any]) -> Judgement:
    """Blocked when spec.bad is set; a warning when spec.meh is set."""
    spec = body.get("spec") or {}
    kind = str(body.get("kind"))
    if spec.get("bad"):
        return Judgement(kind, (Issue("error", "spec.bad", str(spec["bad"])),))
    if spec.get("meh"):
        return Judgement(kind, (Issue("warning", "spec.meh", "hmm"),))
    return Judgement(kind)


def make(api: MemoryKubeApi, clock: Clock, registry: CollectorRegistry | None = None) -> Reconciler:
    return Reconciler(
        client=api,
        judge=judge,
        metrics=OperatorMetrics(registry or CollectorRegistry()),
        component="acns-operator",
        instance="test-1",
        backoff=0.01,
        backoff_max=0.05,
        clock=clock,
    )


def store_policy(api: MemoryKubeApi, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }
    return api.put(f"{CNP_PATH}/{name}", body)


def stored(api: MemoryKubeApi, name: str) -> dict[str, Any]:
    return api.objects[f"{CNP_PATH}/{name}"]


def events(api: MemoryKubeApi) -> list[dict[str, Any]]:
    return [body for path, body in api.objects.items() if path.startswith(EVENTS)]


async def settle(reconciler: Reconciler) -> None:
    for _ in range(200):
        await asyncio.sleep(0.005)
        if reconciler.idle:
            return
    raise AssertionError("the reconciler never became idle")


async def run(reconciler: Reconciler, *bodies: dict[str, Any]) -> None:
    task = asyncio.create_task(reconciler.run())
    try:
        for body in bodies:
            reconciler.observe(body)
        await settle(reconciler)
    finally:
        task.cancel()


async def test_an_admitted_policy_gets_valid_true_written_through_the_status_path() -> None:
    api, clock = MemoryKubeApi(), Clock()
    reconciler = make(api, clock)
    reconciler.lead()
    await run(reconciler, store_policy(api, "good", {}))
    condition = stored(api, "good")["status"]["conditions"][0]
    assert condition == {
        "type": "Valid",
        "status": "True",
        "lastTransitionTime": "2026-05-01T12:00:00Z",
        "message": "Policy validation succeeded",
    }
    assert ("merge_patch", f"{CNP_PATH}/good/status") in api.calls
    assert events(api) == []


async def test_a_blocked_policy_gets_valid_false_and_one_warning_event() -> None:
    api, clock = MemoryKubeApi(), Clock()
    reconciler = make(api, clock)
    reconciler.lead()
    await run(reconciler, store_policy(api, "bad", {"bad": "http rules"}))
    assert stored(api, "bad")["status"]["conditions"][0]["status"] == "False"
    assert stored(api, "bad")["status"]["conditions"][0]["message"] == "spec.bad: http rules"
    [event] = events(api)
    assert event["type"] == "Warning"
    assert event["involvedObject"]["name"] == "bad"
    assert "spec.bad: http rules" in event["message"]


async def test_a_restarted_writer_writes_nothing_and_posts_no_event_again() -> None:
    api, clock = MemoryKubeApi(), Clock()
    first = make(api, clock)
    first.lead()
    await run(first, store_policy(api, "bad", {"bad": "x"}), store_policy(api, "good", {}))
    versions = {name: stored(api, name)["metadata"]["resourceVersion"] for name in ("bad", "good")}
    api.calls.clear()
    clock.now += timedelta(hours=1)
    second = make(api, clock)
    second.lead()
    await run(second, stored(api, "bad"), stored(api, "good"))
    assert [call for call in api.calls if call[0] != "get"] == []
    assert {n: stored(api, n)["metadata"]["resourceVersion"] for n in versions} == versions
    assert len(events(api)) == 1


async def test_valid_to_invalid_to_valid_moves_the_transition_time_only_on_flips() -> None:
    api, clock = MemoryKubeApi(), Clock()
    reconciler = make(api, clock)
    reconciler.lead()
    await run(reconciler, store_policy(api, "p", {}))
    times = [stored(api, "p")["status"]["conditions"][0]["lastTransitionTime"]]
    for spec in ({"bad": "one"}, {"bad": "two"}, {}):
        clock.now += timedelta(minutes=1)
        body = stored(api, "p")
        body["spec"] = spec
        await run(reconciler, api.put(f"{CNP_PATH}/p", body))
        times.append(stored(api, "p")["status"]["conditions"][0]["lastTransitionTime"])
    assert times == [
        "2026-05-01T12:00:00Z",
        "2026-05-01T12:01:00Z",
        "2026-05-01T12:01:00Z",  # still invalid, other message: no flip
        "2026-05-01T12:03:00Z",
    ]
    assert [e["message"].splitlines()[1] for e in events(api)] == [
        "- spec.bad: one",
        "- spec.bad: two",
    ]


async def test_a_follower_judges_but_writes_nothing() -> None:
    api, clock = MemoryKubeApi(), Clock()
    registry = CollectorRegistry()
    reconciler = make(api, clock, registry)
    await run(reconciler, store_policy(api, "bad", {"bad": "x"}))
    assert "status" not in stored(api, "bad")
    assert (
        registry.get_sample_value(
            "acns_policies",
            {"kind": "CiliumNetworkPolicy", "namespace": "ns", "verdict": "blocked"},
        )
        == 1.0
    )


async def test_becoming_leader_reconciles_everything_already_seen() -> None:
    api, clock = MemoryKubeApi(), Clock()
    reconciler = make(api, clock)
    reconciler.observe(store_policy(api, "a", {}))
    reconciler.observe(store_policy(api, "b", {"meh": True}))
    reconciler.lead()
    await run(reconciler)
    assert stored(api, "a")["status"]["conditions"][0]["status"] == "True"
    message = stored(api, "b")["status"]["conditions"][0]["message"]
    assert message == "Policy validation succeeded\nwarning: spec.meh: hmm"


async def test_a_write_based_on_a_stale_version_is_retried_with_the_latest_one() -> None:
    api, clock = MemoryKubeApi(), Clock()
    reconciler = make(api, clock)
    reconciler.lead()
    old = store_policy(api, "p", {})
    newer = stored(api, "p") | {"spec": {"bad": "late"}}
    reconciler.observe(old)
    api.put(f"{CNP_PATH}/p", newer)  # the object changed; the watch has not told us yet
    task = asyncio.create_task(reconciler.run())
    try:
        await asyncio.sleep(0.02)
        reconciler.observe(stored(api, "p"))
        await settle(reconciler)
    finally:
        task.cancel()
    assert stored(api, "p")["status"]["conditions"][0]["message"] == "spec.bad: late"


async def test_api_failures_are_counted_and_retried() -> None:
    api, clock = MemoryKubeApi(), Clock()
    registry = CollectorRegistry()
    reconciler = make(api, clock, registry)
    reconciler.lead()
    api.fail_next("merge_patch", KubeApiError(500, "InternalError", "etcd is sad"))
    await run(reconciler, store_policy(api, "p", {}))
    assert stored(api, "p")["status"]["conditions"][0]["status"] == "True"
    labels = {"kind": "CiliumNetworkPolicy", "error": "http-500"}
    assert registry.get_sample_value("acns_reconcile_errors_total", labels) == 1.0


async def test_an_event_left_by_a_failed_attempt_is_not_posted_twice() -> None:
    api, clock = MemoryKubeApi(), Clock()
    reconciler = make(api, clock)
    reconciler.lead()
    api.fail_next("merge_patch", KubeApiError(503, "ServiceUnavailable", "try again"))
    await run(reconciler, store_policy(api, "bad", {"bad": "x"}))
    assert stored(api, "bad")["status"]["conditions"][0]["status"] == "False"
    assert len(events(api)) == 1
    assert [c[0] for c in api.calls].count("create") == 2  # the retry hit AlreadyExists


async def test_a_deleted_policy_is_forgotten_and_not_written() -> None:
    api, clock = MemoryKubeApi(), Clock()
    reconciler = make(api, clock)
    body = store_policy(api, "gone", {})
    reconciler.observe(body)
    reconciler.forget(body)
    reconciler.lead()
    await run(reconciler)
    assert api.calls == []
    assert len(reconciler.store) == 0


async def test_losing_leadership_stops_pending_retries() -> None:
    api, clock = MemoryKubeApi(), Clock()
    reconciler = make(api, clock)
    reconciler.lead()
    api.fail_next("merge_patch", KubeApiError(500, "InternalError", "x"))
    task = asyncio.create_task(reconciler.run())
    try:
        reconciler.observe(store_policy(api, "p", {}))
        await asyncio.sleep(0.005)
        reconciler.follow()
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
    assert "status" not in stored(api, "p")
    assert reconciler.idle


def test_policy_keys_of_cluster_scoped_objects_have_an_empty_namespace() -> None:
    body = {"kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "c"}}
    assert PolicyKey.from_body(body) == PolicyKey("CiliumClusterwideNetworkPolicy", "", "c")


async def test_a_malformed_object_gets_valid_false_with_the_parse_error_and_nothing_crashes() -> (
    None
):
    api, clock = MemoryKubeApi(), Clock()
    reconciler = Reconciler(
        client=api,
        judge=make_judge(PolicySettings()),
        metrics=OperatorMetrics(CollectorRegistry()),
        component="acns-operator",
        instance="test-1",
        clock=clock,
    )
    reconciler.lead()
    body = store_policy(api, "garbage", {})
    body["spec"] = {"egress": "not a list", "endpointSelector": 7}
    api.objects[f"{CNP_PATH}/garbage"]["spec"] = body["spec"]
    await run(reconciler, body)
    condition = stored(api, "garbage")["status"]["conditions"][0]
    assert condition["status"] == "False"
    assert "spec.egress" in condition["message"]
    assert "spec.endpointSelector" in condition["message"]
    assert len(events(api)) == 1
