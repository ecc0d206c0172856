"""Compiled endpoint rules -> what the datapath enforces and what the proxy is sent.

:func:`to_program` gives the backend's :class:`~acns_operator.agent.datapath.EndpointProgram`;
:func:`to_endpoint_policy` gives the ``EndpointPolicy`` of a snapshot for the proxy.
"""

from __future__ import annotations

import ipaddress

from acns_operator.agent.datapath import (
    PROTOCOL_NUMBERS,
    TCP,
    UDP,
    EndpointProgram,
    FQDNRule,
    PeerRule,
    PortRange,
    selector_key,
)
from acns_operator.policy.compile import EndpointRules, PeerAllow, Port
from acns_operator.proto import fqdndata_pb2 as pb


def to_port_range(port: Port) -> PortRange:
    """A compiled port as a datapath range."""
    return PortRange(PROTOCOL_NUMBERS[port.protocol.lower()], port.first, port.last)


def _peer(rule: PeerAllow) -> PeerRule:
    return PeerRule(
        prefixes=rule.prefixes,
        ports=tuple(to_port_range(p) for p in rule.ports),
        source=str(rule.source),
    )


def to_program(rules: EndpointRules) -> EndpointProgram:
    """The datapath program of one endpoint."""
    redirects: list[PeerRule] = []
    for dns in rules.dns:
        ports = tuple(to_port_range(p) for p in dns.ports if p.protocol in ("TCP", "UDP")) or (
            PortRange(UDP, 53, 53),
            PortRange(TCP, 53, 53),
        )
        redirects.append(PeerRule(dns.servers or ("0.0.0.0/0",), ports, str(dns.source)))
    return EndpointProgram(
        ip=rules.ip,
        enforced=rules.enforced,
        deny=tuple(_peer(r) for r in rules.deny),
        allow=tuple(_peer(r) for r in rules.allow),
        fqdn=tuple(
            FQDNRule(
                selectors=tuple(sorted({selector_key(s) for s in f.selectors})),
                ports=tuple(to_port_range(p) for p in f.ports),
                source=str(f.source),
            )
            for f in rules.fqdn
        ),
        dns_redirect=tuple(redirects),
    )


def endpoint_id(ip: str) -> int:
    """A stable endpoint id: the IPv4 address as a number (the same after restarts)."""
    return int(ipaddress.ip_address(ip))


def search_suffixes(namespace: str, cluster_domain: str) -> list[str]:
    """A pod's DNS search suffixes, as kubelet writes them into resolv.conf."""
    domain = cluster_domain.strip(".")
    return [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]


def _prefix(text: str) -> pb.Prefix:
    network = ipaddress.ip_network(text, strict=False)
    return pb.Prefix(address=network.network_address.packed, length=network.prefixlen)


def to_endpoint_policy(rules: EndpointRules, cluster_domain: str) -> pb.EndpointPolicy:
    """The endpoint's DNS rules as sent to the proxy."""
    out: list[pb.DNSRule] = []
    for dns in rules.dns:
        servers: list[pb.DNSServer] = []
        prefixes = [_prefix(p) for p in dns.servers]
        for port in dns.ports:
            if port.protocol not in ("TCP", "UDP"):
                continue
            number = 0 if (port.first, port.last) == (0, 65535) else port.first
            servers.append(
                pb.DNSServer(
                    prefixes=prefixes, port=number, protocol=PROTOCOL_NUMBERS[port.protocol.lower()]
                )
            )
        out.append(
            pb.DNSRule(
                match_names=list(dns.match_names),
                match_patterns=list(dns.match_patterns),
                allow_all=dns.allow_all,
                servers=servers,
                source=pb.RuleSource(
                    kind=dns.source.kind,
                    namespace=dns.source.namespace,
                    name=dns.source.name,
                    path=dns.source.path + ".toPorts.rules.dns",
                ),
            )
        )
    return pb.EndpointPolicy(
        endpoint_id=endpoint_id(rules.ip),
        ips=[ipaddress.ip_address(rules.ip).packed],
        namespace=rules.namespace,
        pod_name=rules.name,
        rules=out,
        search_suffixes=search_suffixes(rules.namespace, cluster_domain),
    )
