"""The datapath engine with the memory backend, and the nftables batches it renders."""

from __future__ import annotations

import json

from acns_operator.agent.backends.memory import MemoryBackend
from acns_operator.agent.backends.nftables import (
    NftConfig,
    parse_table,
    render_update,
    set_name,
)
from acns_operator.agent.clock import ManualClock
from acns_operator.agent.datapath import (
    ICMP,
    TCP,
    UDP,
    Datapath,
    DatapathUpdate,
    EndpointProgram,
    FQDNRule,
    PeerRule,
    PortRange,
)
from acns_operator.agent.store import PolicyMapStore

BACKEND_EP = "10.244.1.20"
OTHER_EP = "10.244.1.21"
PAYMENTS = "name:payments.example.test."
WILDCARD = "pattern:*.example.test."


def backend_program(ip: str = BACKEND_EP) -> EndpointProgram:
    return EndpointProgram(
        ip=ip,
        enforced=True,
        deny=(PeerRule(("198.51.100.66/32",), (), "ns/deny spec.egressDeny[0]"),),
        allow=(
            PeerRule(("10.244.2.30/32",), (PortRange(TCP, 5432, 5432),), "ns/db spec.egress[0]"),
        ),
        fqdn=(FQDNRule((PAYMENTS,), (PortRange(TCP, 443, 443),), "ns/pay spec.egress[1]"),),
        dns_redirect=(
            PeerRule(
                ("10.244.250.10/32",), (PortRange(UDP, 53, 53), PortRange(TCP, 53, 53)), "ns/dns"
            ),
        ),
    )


def setup() -> tuple[ManualClock, PolicyMapStore, MemoryBackend, Datapath]:
    clock = ManualClock()
    store = PolicyMapStore(clock)
    backend = MemoryBackend()
    datapath = Datapath(backend, store, clock)
    return clock, store, backend, datapath


def test_an_endpoint_selected_by_egress_rules_is_default_deny() -> None:
    clock, _, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    verdict = backend.verdict(BACKEND_EP, "192.0.2.99", TCP, 443, clock.now())
    assert not verdict.allowed
    assert "default deny" in verdict.reason
    assert backend.verdict(OTHER_EP, "192.0.2.99", TCP, 443, clock.now()).allowed


def test_l3_l4_peers_are_allowed_on_their_port_only() -> None:
    clock, _, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    assert backend.verdict(BACKEND_EP, "10.244.2.30", TCP, 5432, clock.now()).allowed
    assert not backend.verdict(BACKEND_EP, "10.244.2.30", TCP, 5433, clock.now()).allowed
    assert not backend.verdict(BACKEND_EP, "10.244.2.30", UDP, 5432, clock.now()).allowed


def test_a_resolved_name_allows_its_ips_on_the_rule_ports_until_the_ttl() -> None:
    clock, store, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    assert not backend.verdict(BACKEND_EP, "192.0.2.10", TCP, 443, clock.now()).allowed
    update = datapath.on_mapping(
        store.record(BACKEND_EP, "payments.example.test.", ["192.0.2.10"], 30)
    )
    assert update.elements == [(PAYMENTS, "192.0.2.10", clock.now() + 30)]
    verdict = backend.verdict(BACKEND_EP, "192.0.2.10", TCP, 443, clock.now())
    assert verdict.allowed
    assert verdict.source == "ns/pay spec.egress[1]"
    assert not backend.verdict(BACKEND_EP, "192.0.2.10", TCP, 80, clock.now()).allowed
    clock.advance(31)
    assert not backend.verdict(BACKEND_EP, "192.0.2.10", TCP, 443, clock.now()).allowed


def test_a_name_no_selector_matches_changes_nothing() -> None:
    _, store, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    before = backend.transactions
    update = datapath.on_mapping(store.record(BACKEND_EP, "other.example.test.", ["192.0.2.1"], 30))
    assert not update
    assert backend.transactions == before


def test_ips_learned_by_one_endpoint_serve_another_endpoints_selector() -> None:
    clock, store, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program(), OTHER_EP: backend_program(OTHER_EP)})
    datapath.on_mapping(store.record(OTHER_EP, "payments.example.test.", ["192.0.2.10"], 30))
    assert backend.verdict(BACKEND_EP, "192.0.2.10", TCP, 443, clock.now()).allowed


def test_a_new_selector_is_filled_from_the_node_wide_cache() -> None:
    clock, store, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    store.record(BACKEND_EP, "api.example.test.", ["192.0.2.50"], 300)
    widened = EndpointProgram(
        ip=BACKEND_EP, enforced=True, fqdn=(FQDNRule((WILDCARD,), (), "ns/wide"),)
    )
    update = datapath.update_programs({BACKEND_EP: widened})
    assert update.new_selectors == [WILDCARD]
    assert update.removed_selectors == [PAYMENTS]
    assert backend.verdict(BACKEND_EP, "192.0.2.50", UDP, 9, clock.now()).allowed


def test_deny_rules_win_even_over_established_connections() -> None:
    clock, _, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    verdict = backend.verdict(BACKEND_EP, "198.51.100.66", TCP, 443, clock.now(), established=True)
    assert not verdict.allowed
    assert verdict.source == "ns/deny spec.egressDeny[0]"
    assert backend.verdict(BACKEND_EP, "192.0.2.7", TCP, 443, clock.now(), established=True).allowed


def test_gc_removes_dead_ips_and_keeps_zombies_in_the_selector_sets() -> None:
    clock, store, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    datapath.on_mapping(
        store.record(BACKEND_EP, "payments.example.test.", ["192.0.2.10", "192.0.2.11"], 10)
    )
    store.record(BACKEND_EP, "payments2.example.test.", ["192.0.2.12"], 10)
    clock.advance(11)
    update = datapath.on_gc(store.gc(live_connections={(BACKEND_EP, "192.0.2.10")}))
    # Both IPs of the name survive as zombies (one has a live connection).
    assert sorted(ip for _, ip, _ in update.elements) == ["192.0.2.10", "192.0.2.11"]
    assert backend.verdict(BACKEND_EP, "192.0.2.10", TCP, 443, clock.now()).allowed
    clock.advance(130)
    update = datapath.on_gc(store.gc(live_connections=set()))
    assert sorted(update.removed_elements) == [(PAYMENTS, "192.0.2.10"), (PAYMENTS, "192.0.2.11")]
    assert backend.sets[PAYMENTS] == {}


def test_removing_the_last_program_removes_its_selector_sets() -> None:
    _, _, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    update = datapath.set_programs({})
    assert update.programs == {BACKEND_EP: None}
    assert update.removed_selectors == [PAYMENTS]
    assert backend.programs == {}
    assert backend.sets == {}


def test_an_unchanged_program_after_a_restart_is_not_rewritten() -> None:
    clock, store, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    datapath.on_mapping(store.record(BACKEND_EP, "payments.example.test.", ["192.0.2.10"], 30))
    restarted = Datapath(backend, PolicyMapStore(clock), clock)
    restarted.adopt(backend.observe())
    before = backend.transactions
    update = restarted.set_programs({BACKEND_EP: backend_program()})
    assert not update
    assert backend.transactions == before
    assert backend.verdict(BACKEND_EP, "192.0.2.10", TCP, 443, clock.now()).allowed


def test_the_nftables_batch_of_a_program_has_deny_first_and_the_fingerprint_last() -> None:
    program = backend_program()
    update = DatapathUpdate(programs={BACKEND_EP: program}, new_selectors=[PAYMENTS])
    batch = render_update(NftConfig(), update, 0.0, installed=set(), with_dns=set()).splitlines()
    rules = [line for line in batch if line.startswith("add rule inet acns_agent ep_10_244_1_20")]
    assert rules[0].endswith("ip daddr 198.51.100.66/32 drop")
    assert rules[1].endswith("ct state established,related accept")
    assert rules[2].endswith("ip daddr 10.244.2.30/32 meta l4proto tcp th dport 5432 accept")
    assert rules[3].endswith(f"ip daddr @{set_name(PAYMENTS)} meta l4proto tcp th dport 443 accept")
    assert rules[4].endswith(f'drop comment "acns:fp={program.fingerprint()}"')
    assert "flush chain" not in "\n".join(batch), "a new chain needs no flush"
    assert (
        "add rule inet acns_agent dns_10_244_1_20 ip daddr 10.244.250.10/32 "
        "meta l4proto . th dport { tcp . 53, udp . 53 } meta mark set 0x200 notrack"
    ) in batch
    assert "add element inet acns_agent endpoints { 10.244.1.20 : jump ep_10_244_1_20 }" in batch


def test_a_replaced_program_is_flushed_and_rewritten_in_the_same_batch() -> None:
    update = DatapathUpdate(programs={BACKEND_EP: backend_program()})
    batch = render_update(
        NftConfig(), update, 0.0, installed={BACKEND_EP}, with_dns={BACKEND_EP}
    ).splitlines()
    assert batch[:2] == [
        "add chain inet acns_agent ep_10_244_1_20",
        "flush chain inet acns_agent ep_10_244_1_20",
    ]


def test_overlapping_prefixes_and_ports_are_merged_for_nftables() -> None:
    program = EndpointProgram(
        ip=BACKEND_EP,
        enforced=True,
        allow=(
            PeerRule(
                ("10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"),
                (PortRange(TCP, 80, 90), PortRange(TCP, 85, 100), PortRange(UDP, 53, 53)),
            ),
        ),
    )
    batch = render_update(
        NftConfig(),
        DatapathUpdate(programs={BACKEND_EP: program}),
        0.0,
        installed=set(),
        with_dns=set(),
    )
    assert "ip daddr 10.0.0.0/8 meta l4proto . th dport { tcp . 80-100, udp . 53 } accept" in batch


def test_rules_with_the_same_ports_are_merged_into_one() -> None:
    program = EndpointProgram(
        ip=BACKEND_EP,
        enforced=True,
        allow=(
            PeerRule(("10.244.1.53/32",), (PortRange(UDP, 53, 53),), "a"),
            PeerRule(("10.244.250.10/32",), (PortRange(UDP, 53, 53),), "b"),
            PeerRule(("10.244.2.30/32",), (PortRange(TCP, 80, 80), PortRange(TCP, 443, 443)), "c"),
        ),
    )
    batch = render_update(
        NftConfig(),
        DatapathUpdate(programs={BACKEND_EP: program}),
        0.0,
        installed=set(),
        with_dns=set(),
    )
    assert (
        "ip daddr { 10.244.1.53/32, 10.244.250.10/32 } meta l4proto udp th dport 53 accept" in batch
    )
    assert "ip daddr 10.244.2.30/32 meta l4proto tcp th dport { 80, 443 } accept" in batch


def test_element_timeouts_come_from_the_store_and_removals_cannot_fail() -> None:
    update = DatapathUpdate(
        elements=[(PAYMENTS, "192.0.2.10", 130.2)], removed_elements=[(PAYMENTS, "192.0.2.11")]
    )
    batch = render_update(NftConfig(), update, 100.0, installed=set(), with_dns=set()).splitlines()
    name = set_name(PAYMENTS)
    assert batch == [
        f"add element inet acns_agent {name} {{ 192.0.2.10 timeout 31s }}",
        f"add element inet acns_agent {name} {{ 192.0.2.11 timeout 1s }}",
        f"delete element inet acns_agent {name} {{ 192.0.2.11 }}",
    ]


def test_reading_the_table_back_recovers_programs_selectors_and_expiries() -> None:
    listing = {
        "nftables": [
            {"set": {"name": "layout", "comment": "acns-agent layout 1"}},
            {
                "set": {
                    "name": set_name(PAYMENTS),
                    "comment": PAYMENTS,
                    "elem": [{"elem": {"val": "192.0.2.10", "timeout": 30, "expires": 12}}],
                }
            },
            {"map": {"name": "endpoints", "elem": [["10.244.1.20", {"jump": {"target": "x"}}]]}},
            {"rule": {"chain": "ep_10_244_1_20", "comment": "acns:fp=abc"}},
        ]
    }
    layout, observed, endpoints, with_dns = parse_table(json.dumps(listing), 1000.0)
    assert layout == "acns-agent layout 1"
    assert observed.fingerprints == {"10.244.1.20": "abc"}
    assert observed.elements == {PAYMENTS: {"192.0.2.10": 1012.0}}
    assert endpoints == {"10.244.1.20"}
    assert with_dns == set()


def test_a_restart_refills_adopted_sets_from_the_restored_store_and_removes_nothing() -> None:
    clock, store, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: backend_program()})
    datapath.on_mapping(store.record(BACKEND_EP, "payments.example.test.", ["192.0.2.10"], 30))
    backend.sets[PAYMENTS]["192.0.2.99"] = clock.now() + 5  # only the kernel knows it
    restored = PolicyMapStore(clock)
    restored.restore(store.to_state())
    restored.record(BACKEND_EP, "payments.example.test.", ["192.0.2.11"], 60)
    again = Datapath(backend, restored, clock)
    again.adopt(backend.observe())
    update = again.refill_from_store()
    assert update.removed_elements == []
    assert (PAYMENTS, "192.0.2.11", clock.now() + 60) in update.elements
    assert set(backend.sets[PAYMENTS]) == {"192.0.2.10", "192.0.2.11", "192.0.2.99"}


def icmp_program() -> EndpointProgram:
    return EndpointProgram(
        ip=BACKEND_EP,
        enforced=True,
        deny=(PeerRule(("192.0.2.66/32",), (PortRange(ICMP, 8, 8),), "deny ping"),),
        allow=(
            PeerRule(("192.0.2.10/32",), (PortRange(ICMP, 8, 8), PortRange(ICMP, 13, 13)), "a"),
            PeerRule(("0.0.0.0/0",), (PortRange(ICMP, 0, 0),), "b"),
        ),
        fqdn=(FQDNRule((PAYMENTS,), (PortRange(ICMP, 8, 8),), "c"),),
    )


def test_icmp_types_are_allowed_and_denied_per_type_by_the_memory_backend() -> None:
    clock, _, backend, datapath = setup()
    datapath.set_programs({BACKEND_EP: icmp_program()})
    now = clock.now()
    assert backend.verdict(BACKEND_EP, "192.0.2.10", ICMP, 8, now).allowed
    assert backend.verdict(BACKEND_EP, "192.0.2.10", ICMP, 13, now).allowed
    assert not backend.verdict(BACKEND_EP, "192.0.2.10", ICMP, 3, now).allowed
    assert not backend.verdict(BACKEND_EP, "192.0.2.10", TCP, 8, now).allowed
    assert not backend.verdict(BACKEND_EP, "192.0.2.11", ICMP, 8, now).allowed
    assert backend.verdict(BACKEND_EP, "198.51.100.1", ICMP, 0, now).allowed
    denied = backend.verdict(BACKEND_EP, "192.0.2.66", ICMP, 8, now)
    assert not denied.allowed
    assert denied.source == "deny ping"


def test_icmp_rules_render_as_icmp_type_matches_never_as_ports() -> None:
    program = icmp_program()
    update = DatapathUpdate(programs={BACKEND_EP: program}, new_selectors=[PAYMENTS])
    batch = render_update(NftConfig(), update, 0.0, installed=set(), with_dns=set()).splitlines()
    rules = [
        line.removeprefix("add rule inet acns_agent ep_10_244_1_20 ")
        for line in batch
        if line.startswith("add rule inet acns_agent ep_10_244_1_20")
    ]
    assert rules == [
        "ip daddr 192.0.2.66/32 meta l4proto icmp icmp type 8 drop",
        "ct state established,related accept",
        "meta l4proto icmp icmp type 0 accept",
        "ip daddr 192.0.2.10/32 meta l4proto icmp icmp type { 8, 13 } accept",
        f"ip daddr @{set_name(PAYMENTS)} meta l4proto icmp icmp type 8 accept",
        f'drop comment "acns:fp={program.fingerprint()}"',
    ]


def test_a_rule_mixing_icmp_types_and_ports_renders_one_rule_for_each() -> None:
    program = EndpointProgram(
        ip=BACKEND_EP,
        enforced=True,
        allow=(PeerRule(("192.0.2.10/32",), (PortRange(ICMP, 0, 255), PortRange(TCP, 80, 80))),),
    )
    batch = render_update(
        NftConfig(), DatapathUpdate(programs={BACKEND_EP: program}), 0.0,
        installed=set(), with_dns=set(),
    )  # fmt: skip
    assert "ip daddr 192.0.2.10/32 meta l4proto icmp accept" in batch
    assert "ip daddr 192.0.2.10/32 meta l4proto tcp th dport 80 accept" in batch
    assert "th dport 0-255" not in batch
