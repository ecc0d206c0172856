"""The policy-map store: TTLs, limits, node-wide cache, zombies, GC, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acns_operator.agent.clock import ManualClock
from acns_operator.agent.persistence import StateFiles
from acns_operator.agent.store import PolicyMapStore
from acns_operator.errors import InputError

EP_A = "10.244.1.10"
EP_B = "10.244.1.11"
NAME = "payments.example.test."


def make_store(clock: ManualClock, **kwargs: int | float) -> PolicyMapStore:
    return PolicyMapStore(clock, **kwargs)  # type: ignore[arg-type]


def test_an_entry_expires_at_lookup_time_plus_ttl() -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=30)
    assert store.ips(NAME) == {"192.0.2.10": clock.now() + 30}
    clock.advance(30)
    assert store.ips(NAME) == {}, "lookups never return expired entries"


def test_min_ttl_raises_a_short_ttl() -> None:
    clock = ManualClock()
    store = make_store(clock, min_ttl=300)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=5)
    assert store.ips(NAME)["192.0.2.10"] == clock.now() + 300


def test_a_repeated_lookup_only_extends_an_entry() -> None:
    clock = ManualClock()
    store = make_store(clock)
    first = store.record(EP_A, NAME, ["192.0.2.10"], ttl=100)
    assert first.changed == (("192.0.2.10", clock.now() + 100),)
    assert first.new_ips == 1
    clock.advance(10)
    shorter = store.record(EP_A, NAME, ["192.0.2.10"], ttl=5)
    assert shorter.changed == ()
    assert store.ips(NAME)["192.0.2.10"] == clock.now() - 10 + 100
    longer = store.record(EP_A, NAME, ["192.0.2.10"], ttl=200)
    assert longer.changed == (("192.0.2.10", clock.now() + 200),)
    assert longer.new_ips == 0


def test_the_node_wide_cache_joins_every_endpoint() -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=10)
    store.record(EP_B, NAME, ["192.0.2.11"], ttl=50)
    assert store.ips(NAME) == {"192.0.2.10": clock.now() + 10, "192.0.2.11": clock.now() + 50}
    assert store.names() == [NAME]


def test_gc_turns_an_expired_ip_with_a_live_connection_into_an_alive_zombie() -> None:
    clock = ManualClock()
    store = make_store(clock, zombie_ttl=120)
    store.record(EP_A, NAME, ["192.0.2.10", "192.0.2.20"], ttl=10)
    clock.advance(11)
    result = store.gc(live_connections={(EP_A, "192.0.2.10")})
    assert result.new_zombies == 2
    # 192.0.2.20 shares the name with an alive zombie, so Cilium keeps it too.
    assert result.dead_zombies == 0
    assert store.ips(NAME) == {
        "192.0.2.10": clock.now() + 120,
        "192.0.2.20": clock.now() + 120,
    }
    zombies = [r for r in store.rows() if r.source == "zombie"]
    assert {r.ip for r in zombies} == {"192.0.2.10", "192.0.2.20"}


def test_gc_deletes_an_expired_ip_without_connections_and_counts_the_name() -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=10)
    store.record(EP_A, "other.example.test.", ["192.0.2.30"], ttl=1000)
    clock.advance(11)
    result = store.gc(live_connections=set())
    assert result.deleted_names == (NAME,)
    assert result.dead_zombies == 1
    assert store.gc_deletions_total == 1
    assert store.ips(NAME) == {}
    assert store.names() == ["other.example.test."]


def test_a_zombie_dies_at_the_first_gc_after_its_connection_closed() -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=10)
    clock.advance(60)
    store.gc(live_connections={(EP_A, "192.0.2.10")})
    assert "192.0.2.10" in store.ips(NAME)
    clock.advance(60)
    result = store.gc(live_connections=set())
    assert result.dead_zombies == 1
    assert store.ips(NAME) == {}


def test_the_idle_grace_period_keeps_a_zombie_after_its_connection_closed() -> None:
    clock = ManualClock()
    store = make_store(clock, idle_grace=300)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=10)
    clock.advance(60)
    store.gc(live_connections={(EP_A, "192.0.2.10")})
    clock.advance(60)
    assert store.gc(live_connections=set()).dead_zombies == 0
    clock.advance(300)
    assert store.gc(live_connections=set()).dead_zombies == 1


def test_a_fresh_lookup_clears_a_zombie() -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=10)
    clock.advance(60)
    store.gc(live_connections={(EP_A, "192.0.2.10")})
    assert [r.source for r in store.rows(endpoint=EP_A)] == ["zombie"]
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=30)
    assert [r.source for r in store.rows(endpoint=EP_A)] == ["lookup"]
    assert store.ips(NAME)["192.0.2.10"] == clock.now() + 120  # zombie re-add is longer
    clock.advance(200)
    assert store.gc(live_connections=set()).new_zombies == 1


def test_the_per_name_limit_evicts_the_soonest_expiring_ips_at_gc() -> None:
    clock = ManualClock()
    store = make_store(clock, max_ips_per_hostname=2)
    for ttl, ip in [(10, "192.0.2.1"), (20, "192.0.2.2"), (30, "192.0.2.3"), (40, "192.0.2.4")]:
        store.record(EP_A, NAME, [ip], ttl=ttl)
    result = store.gc(live_connections=set())
    lookups = {r.ip for r in store.rows() if r.source == "lookup"}
    assert lookups == {"192.0.2.3", "192.0.2.4"}
    # Evicted before expiry: delete-pending is the original expiry, so still alive now.
    assert result.new_zombies == 2
    assert result.dead_zombies == 0
    clock.advance(25)
    store.gc(live_connections=set())
    assert {r.ip for r in store.rows() if r.source == "zombie"} == set()


def test_alive_zombies_are_capped_per_endpoint_keeping_the_most_recently_alive() -> None:
    clock = ManualClock()
    store = make_store(clock, max_zombies_per_endpoint=1, idle_grace=100)
    store.record(EP_A, "a.example.test.", ["192.0.2.1"], ttl=10)
    store.record(EP_A, "b.example.test.", ["192.0.2.2"], ttl=10)
    clock.advance(11)
    # Both are alive (one by conntrack, one by the grace period); only one may stay.
    result = store.gc(live_connections={(EP_A, "192.0.2.1")})
    assert (result.new_zombies, result.dead_zombies, result.evicted_zombies) == (2, 0, 1)
    assert [r.ip for r in store.rows() if r.source == "zombie"] == ["192.0.2.1"]
    assert set(store.ips("b.example.test.")) == set()


def test_zero_deferred_deletes_disables_zombies() -> None:
    clock = ManualClock()
    store = make_store(clock, max_zombies_per_endpoint=0)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=10)
    clock.advance(11)
    result = store.gc(live_connections={(EP_A, "192.0.2.10")})
    assert result.new_zombies == 0
    assert store.ips(NAME) == {}


def test_a_negative_zombie_cap_is_refused() -> None:
    with pytest.raises(InputError):
        make_store(ManualClock(), max_zombies_per_endpoint=-1)


def test_forgetting_an_endpoint_removes_what_only_it_learned() -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=100)
    store.record(EP_B, NAME, ["192.0.2.11"], ttl=100)
    assert store.forget_endpoint(EP_A) == (NAME,)
    assert set(store.ips(NAME)) == {"192.0.2.11"}
    assert store.endpoints() == [EP_B]


def test_stats_count_active_names_ips_and_zombies_per_endpoint() -> None:
    clock = ManualClock()
    store = make_store(clock)
    store.record(EP_A, NAME, ["192.0.2.10", "192.0.2.11"], ttl=100)
    store.record(EP_A, "short.example.test.", ["192.0.2.12"], ttl=5)
    clock.advance(10)
    store.gc(live_connections={(EP_A, "192.0.2.12")})
    stats = store.stats()[EP_A]
    assert (stats.active_names, stats.active_ips, stats.alive_zombies) == (1, 2, 1)


def test_a_restart_restores_entries_with_their_ttls_and_expired_ones_as_zombies(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    store = make_store(clock)
    files = StateFiles(tmp_path)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=30)
    store.record(EP_A, "long.example.test.", ["192.0.2.20"], ttl=3600)
    files.compact(store)
    clock.advance(5)
    store.record(EP_B, "late.example.test.", ["192.0.2.30"], ttl=3600)
    files.append(EP_B, "late.example.test.", ["192.0.2.30"], 3600, clock.now())
    files.close()

    clock.advance(60)  # the agent was down for a minute: NAME expired meanwhile
    restored = make_store(clock, zombie_ttl=120)
    assert StateFiles(tmp_path).load(restored) == 3
    assert restored.ips("long.example.test.") == {"192.0.2.20": clock.now() - 65 + 3600}
    assert restored.ips("late.example.test.") == {"192.0.2.30": clock.now() - 60 + 3600}
    # Expired during the downtime: a zombie, allowed for the zombie TTL until GC looks.
    assert restored.ips(NAME) == {"192.0.2.10": clock.now() + 120}
    assert [r.source for r in restored.rows(name=NAME)] == ["zombie"]
    assert restored.gc(live_connections=set()).dead_zombies == 1


def test_compaction_empties_the_journal_and_keeps_everything(tmp_path: Path) -> None:
    clock = ManualClock()
    store = make_store(clock)
    files = StateFiles(tmp_path)
    store.record(EP_A, NAME, ["192.0.2.10"], ttl=300)
    files.append(EP_A, NAME, ["192.0.2.10"], 300, clock.now())
    files.compact(store)
    assert not files.journal_path.exists()
    state = json.loads(files.state_path.read_text())
    assert state["endpoints"][EP_A]["lookups"][0][:2] == [NAME, "192.0.2.10"]
    again = make_store(clock)
    StateFiles(tmp_path).load(again)
    assert again.to_state()["endpoints"] == store.to_state()["endpoints"]


def test_a_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    clock = ManualClock()
    files = StateFiles(tmp_path)
    files.append(EP_A, NAME, ["192.0.2.10"], 300, clock.now())
    files.close()
    with files.journal_path.open("a") as journal:
        journal.write('{"e":"10.244.1.10","n":"x.')
    store = make_store(clock)
    assert StateFiles(tmp_path).load(store) == 1
    assert set(store.ips(NAME)) == {"192.0.2.10"}


def test_a_corrupt_snapshot_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(InputError):
        StateFiles(tmp_path).load(make_store(ManualClock()))


def test_journal_lines_are_json_whatever_the_name(tmp_path: Path) -> None:
    files = StateFiles(tmp_path)
    files.append(EP_A, NAME, ["192.0.2.10", "192.0.2.11"], 30, 1.5)
    files.append(EP_A, 'odd"name.', [], 30, 2.0)
    files.close()
    lines = [json.loads(line) for line in files.journal_path.read_text().splitlines()]
    assert lines == [
        {"e": EP_A, "n": NAME, "i": ["192.0.2.10", "192.0.2.11"], "t": 30, "l": 1.5},
        {"e": EP_A, "n": 'odd"name.', "i": [], "t": 30, "l": 2.0},
    ]
