"""Leader election on a Lease: one leader, take-over after expiry, prompt hand-over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from acns_operator.operator.kube import KubeApiError
from acns_operator.operator.leader import LeaderElector, LeaseRecord, build_lease_spec, decide
from acns_operator.operator.memory import MemoryKubeApi

LEASE = "/apis/coordination.k8s.io/v1/namespaces/acns/leases/acns-operator"
NOW = datetime(2026, 5, 1, tzinfo=UTC)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(holder: str, renew: str = "t", duration: float = 15) -> LeaseRecord:
    return LeaseRecord(holder=holder, renew_time=renew, duration=duration, transitions=0)


def test_a_free_lease_is_acquired() -> None:
    assert decide(None, "me", 0, 0) == "acquire"
    assert decide(record(""), "me", 0, 0) == "acquire"


def test_our_own_lease_is_renewed() -> None:
    assert decide(record("me"), "me", 0, 100) == "renew"


def test_a_lease_held_by_another_is_waited_for_until_we_saw_it_unchanged_long_enough() -> None:
    assert decide(record("other"), "me", observed_at=100, now=114.9) == "wait"
    assert decide(record("other"), "me", observed_at=100, now=115) == "acquire"


def test_taking_over_counts_a_transition_and_sets_the_acquire_time() -> None:
    spec = build_lease_spec(record("other"), "me", "acquire", 15, NOW)
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"] == "2026-05-01T00:00:00.000000Z"
    renewal = build_lease_spec(record("me"), "me", "renew", 15, NOW)
    assert "acquireTime" not in renewal
    assert renewal["leaseTransitions"] == 0


def elector(api: MemoryKubeApi, identity: str, clock: Monotonic, log: list[str]) -> LeaderElector:
    return LeaderElector(
        client=api,
        namespace="acns",
        name="acns-operator",
        identity=identity,
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
        on_started_leading=lambda: log.append(f"{identity} leads"),
        on_stopped_leading=lambda: log.append(f"{identity} follows"),
        monotonic=clock,
        wall_clock=lambda: NOW + timedelta(seconds=clock.now),
    )


async def test_only_one_of_two_candidates_acquires_the_lease() -> None:
    api, clock, log = MemoryKubeApi(), Monotonic(), list[str]()
    a, b = elector(api, "a", clock, log), elector(api, "b", clock, log)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert api.objects[LEASE]["spec"]["holderIdentity"] == "a"


async def test_the_other_candidate_takes_over_once_the_leader_stops_renewing() -> None:
    api, clock, log = MemoryKubeApi(), Monotonic(), list[str]()
    a, b = elector(api, "a", clock, log), elector(api, "b", clock, log)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.now += 14
    assert not await b.try_acquire_or_renew()
    clock.now += 1
    assert await b.try_acquire_or_renew()
    assert api.objects[LEASE]["spec"]["holderIdentity"] == "b"
    assert api.objects[LEASE]["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()


async def test_a_renewal_resets_the_others_expiry_clock() -> None:
    api, clock, log = MemoryKubeApi(), Monotonic(), list[str]()
    a, b = elector(api, "a", clock, log), elector(api, "b", clock, log)
    await a.try_acquire_or_renew()
    await b.try_acquire_or_renew()
    clock.now += 10
    await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.now += 10
    assert not await b.try_acquire_or_renew()


async def test_a_released_lease_is_taken_at_once_by_the_other_replica() -> None:
    api, clock, log = MemoryKubeApi(), Monotonic(), list[str]()
    a, b = elector(api, "a", clock, log), elector(api, "b", clock, log)
    assert await a.try_acquire_or_renew()
    a.leading = True
    await a.release()
    assert api.objects[LEASE]["spec"]["holderIdentity"] is None
    assert await b.try_acquire_or_renew()
    assert log == ["a follows"]


async def test_two_writers_racing_for_the_lease_cannot_both_win() -> None:
    api, clock, log = MemoryKubeApi(), Monotonic(), list[str]()
    a, b = elector(api, "a", clock, log), elector(api, "b", clock, log)
    assert await a.try_acquire_or_renew()
    clock.now += 100  # expired for both
    api.fail_next("replace", KubeApiError(409, "Conflict", "modified"))
    assert not await b.try_acquire_or_renew()


async def test_errors_other_than_conflicts_surface() -> None:
    api, clock, log = MemoryKubeApi(), Monotonic(), list[str]()
    api.fail_next("get", KubeApiError(403, "Forbidden", "no"))
    with pytest.raises(KubeApiError):
        await elector(api, "a", clock, log).try_acquire_or_renew()
