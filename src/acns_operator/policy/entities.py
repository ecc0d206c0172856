"""Cilium entities (``toEntities``) as address prefixes, as far as they mean anything here.

Without Cilium's identities an entity becomes the prefixes it stands for on this
cluster:

=================  ======================================================================
``all``            every address (0.0.0.0/0)
``world``          everything outside the cluster: 0.0.0.0/0 minus the cluster CIDRs
                   (pod and service ranges) and the nodes' addresses
``cluster``        the cluster CIDRs and every node address
``host``           the local node's addresses
``remote-node``    the other nodes' addresses
``kube-apiserver`` the ``default/kubernetes`` Service ClusterIP and the API server
                   addresses given in the settings
others             nothing (``init``, ``ingress``, ``unmanaged``, ``health``, ``none``:
                   Cilium-internal identities with no counterpart here)
=================  ======================================================================
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

ANY_PREFIX = "0.0.0.0/0"


@dataclass(frozen=True, slots=True)
class EntityContext:
    """The cluster facts entities are resolved with."""

    cluster_cidrs: tuple[str, ...] = ()
    local_node_addresses: tuple[str, ...] = ()
    remote_node_addresses: tuple[str, ...] = ()
    apiserver_addresses: tuple[str, ...] = ()


def _host_prefix(address: str) -> str:
    return str(ipaddress.ip_network(address, strict=False))


def subtract(base: str, holes: Iterable[str]) -> list[str]:
    """IPv4 ``base`` minus ``holes`` (toCIDRSet ``except``, ``world``), collapsed."""
    remaining = [ipaddress.IPv4Network(base, strict=False)]
    for hole_text in holes:
        hole = ipaddress.ip_network(hole_text, strict=False)
        if not isinstance(hole, ipaddress.IPv4Network):
            continue
        next_remaining: list[ipaddress.IPv4Network] = []
        for network in remaining:
            if hole.supernet_of(network):
                continue
            if network.supernet_of(hole):
                next_remaining.extend(network.address_exclude(hole))
            else:
                next_remaining.append(network)
        remaining = next_remaining
    return [str(n) for n in ipaddress.collapse_addresses(remaining)]


def entity_prefixes(entity: str, context: EntityContext) -> tuple[str, ...]:
    """The IPv4 prefixes ``entity`` stands for (see the module table)."""
    nodes = context.local_node_addresses + context.remote_node_addresses
    if entity == "all":
        return (ANY_PREFIX,)
    if entity == "world":
        holes = list(context.cluster_cidrs) + [_host_prefix(a) for a in nodes]
        return tuple(subtract(ANY_PREFIX, holes))
    if entity == "cluster":
        return tuple(context.cluster_cidrs) + tuple(_host_prefix(a) for a in nodes)
    if entity == "host":
        return tuple(_host_prefix(a) for a in context.local_node_addresses)
    if entity == "remote-node":
        return tuple(_host_prefix(a) for a in context.remote_node_addresses)
    if entity == "kube-apiserver":
        return tuple(_host_prefix(a) for a in context.apiserver_addresses)
    return ()
