"""The network harness without namespaces: the test DNS zone, dig parsing, prerequisites."""

from __future__ import annotations

import os

import pytest

from acns_operator.errors import HarnessError
from acns_operator.local.dnsserver import (
    DnsRecord,
    DnsZone,
    RecordType,
    default_test_zone,
    dig_command,
    parse_dig,
)
from acns_operator.local.netns import check_prerequisites, require_prerequisites
from acns_operator.local.topology import Topology

_CHAIN_REPLY = """\
- type: MESSAGE
  message:
    type: RECURSIVE_RESPONSE
    socket_protocol: UDP
    response_message_data:
      status: NOERROR
      flags: qr aa rd ra
      ANSWER_SECTION:
        - 'www.example.test. 40 IN CNAME edge.example.test.'
        - 'edge.example.test. 30 IN CNAME cdn.example.test.'
        - 'cdn.example.test. 60 IN A 198.51.100.30'
"""

_TRUNCATED_THEN_TCP = """\
- type: MESSAGE
  message:
    type: RECURSIVE_RESPONSE
    socket_protocol: UDP
    response_message_data:
      status: NOERROR
      flags: qr tc aa rd ra
;; Truncated, retrying in TCP mode.
- type: MESSAGE
  message:
    type: RECURSIVE_RESPONSE
    socket_protocol: TCP
    response_message_data:
      status: NOERROR
      flags: qr aa rd ra
      ANSWER_SECTION:
        - 'big.example.test. 300 IN A 203.0.113.101'
"""


def test_dig_output_with_a_cname_chain_gives_every_answer_and_the_lowest_ttl() -> None:
    result = parse_dig(_CHAIN_REPLY)

    assert result.rcode == "NOERROR"
    assert [answer.type for answer in result.answers] == ["CNAME", "CNAME", "A"]
    assert result.addresses == ["198.51.100.30"]
    assert result.ttl == 30
    assert result.protocol == "UDP"
    assert not result.truncated


def test_dig_output_with_two_replies_and_status_lines_is_the_last_reply() -> None:
    result = parse_dig(_TRUNCATED_THEN_TCP)

    assert result.protocol == "TCP"
    assert result.addresses == ["203.0.113.101"]


def test_dig_output_without_a_reply_has_no_rcode_and_says_why() -> None:
    stdout = "- type: DIG_ERROR\n  message: |\n    no servers could be reached\n"

    result = parse_dig(stdout, ";; communications error: connection refused\n", 9)

    assert result.timed_out
    assert result.rcode is None
    assert "no servers could be reached" in result.error
    assert "connection refused" in result.error
    assert result.exit_code == 9


def test_a_txt_answer_keeps_its_spaces() -> None:
    stdout = _CHAIN_REPLY.split("      ANSWER_SECTION:")[0] + (
        "      ANSWER_SECTION:\n        - 'text.example.test. 300 IN TXT \"acns test zone\"'\n"
    )

    assert parse_dig(stdout).answers[0].data == '"acns test zone"'


def test_dig_is_asked_for_one_quick_try_in_yaml() -> None:
    argv = dig_command("api.example.test", "10.244.250.10", "AAAA", tcp=True, timeout=0.3)

    assert argv[:4] == ["dig", "+tries=1", "+time=1", "+yaml"]
    assert argv[-2:] == ["api.example.test", "AAAA"]
    assert "+tcp" in argv
    assert "@10.244.250.10" in argv


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "10.0.0.1", "192.0.3.1", "2001:4860::8888", "not-an-address"],
)
def test_a_record_may_not_point_outside_the_test_networks(address: str) -> None:
    kind: RecordType = "AAAA" if ":" in address else "A"

    with pytest.raises(HarnessError, match=r"test hosts|does not appear|not a valid"):
        DnsRecord("evil.example.test", kind, address)


@pytest.mark.parametrize(
    "address", ["192.0.2.1", "198.51.100.255", "203.0.113.7", "10.244.3.4", "2001:db8::1"]
)
def test_a_record_may_point_at_test_hosts_and_pods(address: str) -> None:
    record = DnsRecord("Host.Example.Test.", "AAAA" if ":" in address else "A", address)

    assert record.name == "host.example.test"


def test_a_zone_renders_as_dnsmasq_options_with_per_record_ttls() -> None:
    zone = DnsZone(
        records=(
            DnsRecord("a.example.test", "A", "192.0.2.1", ttl=5),
            DnsRecord("a.example.test", "A", "192.0.2.2"),
            DnsRecord("c.example.test", "CNAME", "a.example.test.", ttl=7),
            DnsRecord("t.example.test", "TXT", "hello world"),
        ),
        default_ttl=60,
    )

    assert zone.to_dnsmasq() == [
        "local-ttl=60",
        "host-record=a.example.test,192.0.2.1,5",
        "host-record=a.example.test,192.0.2.2",
        "cname=c.example.test,a.example.test,7",
        'txt-record=t.example.test,"hello world"',
    ]


def test_replacing_a_names_addresses_keeps_its_other_records() -> None:
    zone = default_test_zone()

    changed = zone.with_address("v6.example.test", "192.0.2.41", ttl=1)

    assert changed.addresses("v6.example.test") == ["192.0.2.41"]
    assert [r.type for r in changed.records if r.name == "v6.example.test"] == ["A"]
    assert changed.addresses("payments.example.test") == ["192.0.2.10"]
    assert zone.addresses("v6.example.test") == ["192.0.2.40"]


def test_the_default_zone_has_the_names_the_proxy_and_agent_tests_rely_on() -> None:
    zone = default_test_zone()

    assert zone.addresses("payments.example.test") == ["192.0.2.10"]
    assert len(zone.addresses("many.example.test")) == 16
    assert len(zone.addresses("big.example.test")) == 100
    assert zone.addresses("example.test") == ["192.0.2.1"]


def test_a_txt_record_with_a_ttl_is_refused_because_dnsmasq_cannot_serve_it() -> None:
    with pytest.raises(HarnessError, match="TTL"):
        DnsRecord("t.example.test", "TXT", "x", ttl=5)


def test_a_run_id_must_be_six_hex_digits_so_names_stay_short_and_ours() -> None:
    with pytest.raises(HarnessError, match="6 hexadecimal"):
        Topology(run_id="other-team")


def test_missing_programs_are_named_with_their_package_and_make_deps() -> None:
    problems = check_prerequisites({"acns-no-such-program": "acns-no-such-package"})

    assert any(
        "`acns-no-such-program` (Debian package acns-no-such-package)" in problem
        and "make deps" in problem
        for problem in problems
    )


def test_running_without_root_is_reported_as_a_missing_prerequisite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    with pytest.raises(HarnessError, match="need root"):
        require_prerequisites({})
