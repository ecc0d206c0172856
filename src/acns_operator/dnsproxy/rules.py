"""DNS rule snapshots: the persisted file format and the compiled per-endpoint rules.

The agent pushes a full :class:`~acns_operator.proto.fqdndata_pb2.PolicyState` whenever
the node's DNS rules change. The proxy compiles it into a :class:`RuleSet` (one
:class:`~acns_operator.fqdn.matcher.Matcher` per endpoint and destination group, so a
check costs O(labels), not O(patterns)), swaps it in atomically, and writes it to disk
so that a restarted proxy serves the same rules before the agent is back.

Snapshot file format (``format: acns-dnsproxy-snapshot/v1``), also the input of
standalone mode (``acns dnsproxy --rules-file``). JSON, addresses in text form::

    {
      "format": "acns-dnsproxy-snapshot/v1",
      "revision": 7,                      # the agent's revision, informational
      "request_id": "…",                  # the snapshot it came from, informational
      "node_name": "node-1",
      "saved_at": "2026-11-21T20:00:00Z",
      "endpoints": [
        {
          "endpoint_id": 12,
          "ips": ["10.244.1.5"],
          "namespace": "shop",
          "pod_name": "backend-0",
          "search_suffixes": ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"],
          "rules": [
            {
              "match_names": ["payments.example.test"],
              "match_patterns": ["*.example.test"],
              "allow_all": false,
              "servers": [{"prefixes": ["10.244.250.10/32"], "port": 53, "protocol": 17}],
              "source": {"kind": "CiliumNetworkPolicy", "namespace": "shop",
                         "name": "backend-egress", "path": "spec.egress[1].toPorts[0].rules.dns"}
            }
          ]
        }
      ]
    }

A server's ``prefixes`` empty means any destination, ``port`` 0 any port, ``protocol``
0 both UDP (17) and TCP (6). An endpoint listed with no rules may query nothing. The
file is written atomically (temporary file, fsync, rename), so a crash leaves either
the old or the new snapshot, never a torn one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acns_operator.errors import InputError, PolicyError
from acns_operator.fqdn.matcher import FQDNSelector, Matcher, compile_selectors
from acns_operator.proto import fqdndata_pb2 as pb

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT: Final = "acns-dnsproxy-snapshot/v1"
PROTO_UDP = 17
PROTO_TCP = 6


class RuleSourceModel(BaseModel):
    """The policy a rule came from."""

    model_config = ConfigDict(extra="forbid")

    kind: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    def describe(self) -> str:
        """``Kind namespace/name path``, for logs."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where} {self.path}".strip()


class ServerModel(BaseModel):
    """Where a rule applies: destination prefixes, port (0 = any) and protocol (0 = both)."""

    model_config = ConfigDict(extra="forbid")

    prefixes: list[str] = Field(default_factory=list)
    port: int = Field(default=0, ge=0, le=65535)
    protocol: Literal[0, 6, 17] = 0


class RuleModel(BaseModel):
    """One DNS rule: names and patterns as written, or allow-all."""

    model_config = ConfigDict(extra="forbid")

    match_names: list[str] = Field(default_factory=list)
    match_patterns: list[str] = Field(default_factory=list)
    allow_all: bool = False
    servers: list[ServerModel] = Field(default_factory=list)
    source: RuleSourceModel = Field(default_factory=RuleSourceModel)


class EndpointModel(BaseModel):
    """The DNS rules of one local endpoint."""

    model_config = ConfigDict(extra="forbid")

    endpoint_id: int = 0
    ips: list[str]
    namespace: str = ""
    pod_name: str = ""
    search_suffixes: list[str] = Field(default_factory=list)
    rules: list[RuleModel] = Field(default_factory=list)


class SnapshotModel(BaseModel):
    """A full snapshot of the node's DNS rules, as persisted and as given to standalone mode."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["acns-dnsproxy-snapshot/v1"] = "acns-dnsproxy-snapshot/v1"
    revision: int = 0
    request_id: str = ""
    node_name: str = ""
    saved_at: str = ""
    endpoints: list[EndpointModel] = Field(default_factory=list)


def _ip_text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def _prefix_text(prefix: pb.Prefix) -> str:
    return str(ipaddress.ip_network((prefix.address, prefix.length), strict=False))


def to_snapshot_model(state: pb.PolicyState) -> SnapshotModel:
    """Convert the agent's protobuf snapshot to the file model (raises InputError)."""
    try:
        return SnapshotModel(
            revision=state.revision,
            request_id=state.request_id,
            node_name=state.node_name,
            endpoints=[
                EndpointModel(
                    endpoint_id=ep.endpoint_id,
                    ips=[_ip_text(ip) for ip in ep.ips],
                    namespace=ep.namespace,
                    pod_name=ep.pod_name,
                    search_suffixes=list(ep.search_suffixes),
                    rules=[
                        RuleModel(
                            match_names=list(rule.match_names),
                            match_patterns=list(rule.match_patterns),
                            allow_all=rule.allow_all,
                            servers=[
                                ServerModel(
                                    prefixes=[_prefix_text(p) for p in server.prefixes],
                                    port=server.port,
                                    protocol=server.protocol,
                                )
                                for server in rule.servers
                            ],
                            source=RuleSourceModel(
                                kind=rule.source.kind,
                                namespace=rule.source.namespace,
                                name=rule.source.name,
                                path=rule.source.path,
                            ),
                        )
                        for rule in ep.rules
                    ],
                )
                for ep in state.endpoints
            ],
        )
    except (ValueError, ValidationError) as exc:
        raise InputError(f"invalid PolicyState: {exc}") from exc


def to_policy_state(model: SnapshotModel) -> pb.PolicyState:
    """Convert the file model to the protobuf snapshot (used by tests and the fake agent)."""
    state = pb.PolicyState(
        revision=model.revision, request_id=model.request_id, node_name=model.node_name
    )
    for ep in model.endpoints:
        out = state.endpoints.add(
            endpoint_id=ep.endpoint_id,
            ips=[ipaddress.ip_address(ip).packed for ip in ep.ips],
            namespace=ep.namespace,
            pod_name=ep.pod_name,
            search_suffixes=ep.search_suffixes,
        )
        for rule in ep.rules:
            out_rule = out.rules.add(
                match_names=rule.match_names,
                match_patterns=rule.match_patterns,
                allow_all=rule.allow_all,
                source=pb.RuleSource(**rule.source.model_dump()),
            )
            for server in rule.servers:
                networks = [ipaddress.ip_network(p, strict=False) for p in server.prefixes]
                out_rule.servers.add(
                    prefixes=[
                        pb.Prefix(address=n.network_address.packed, length=n.prefixlen)
                        for n in networks
                    ],
                    port=server.port,
                    protocol=server.protocol,
                )
    return state


def load_snapshot(path: Path) -> SnapshotModel:
    """Read a snapshot file; raise :class:`InputError` saying what is wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read snapshot {path}: {exc}") from exc
    try:
        return SnapshotModel.model_validate_json(text)
    except ValidationError as exc:
        raise InputError(f"invalid snapshot {path}: {exc}") from exc


def save_snapshot(model: SnapshotModel, path: Path) -> None:
    """Write a snapshot atomically: temporary file in the same folder, fsync, rename."""
    stamped = model.model_copy(
        update={"saved_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(stamped.model_dump_json(indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- compiled form


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A compiled destination: (network, mask, family) prefixes, port, protocol."""

    prefixes: tuple[tuple[int, int, int], ...]
    port: int
    protocol: int

    def admits(self, dst_ip: int, family: int, port: int, protocol: int) -> bool:
        """Whether a query to ``dst_ip`` (as an int), ``port`` and ``protocol`` is covered."""
        if self.port and self.port != port:
            return False
        if self.protocol and self.protocol != protocol:
            return False
        if not self.prefixes:
            return True
        for network, mask, fam in self.prefixes:
            if fam == family and dst_ip & mask == network:
                return True
        return False


@dataclass(frozen=True, slots=True)
class RuleGroup:
    """All of an endpoint's selectors that apply to one destination, compiled together."""

    server: ServerSpec
    matcher: Matcher
    selector_rules: tuple[int, ...]
    """For each selector index in ``matcher``, the index of its rule in ``sources``."""
    allow_all_rule: int | None
    """A rule index that allows every name toward this destination, if any."""


@dataclass(frozen=True, slots=True)
class CompiledEndpoint:
    """One endpoint's DNS rules, ready for :func:`~acns_operator.dnsproxy.decision.decide`."""

    endpoint_id: int
    namespace: str
    pod_name: str
    search_suffixes: tuple[str, ...]
    """Dot-terminated, lower-case suffixes with a leading dot: ``.ns.svc.cluster.local.``."""
    groups: tuple[RuleGroup, ...]
    sources: tuple[RuleSourceModel, ...]
    """The source of each rule, by rule index."""


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The whole node's compiled DNS rules, keyed by endpoint address (text form)."""

    by_ip: dict[str, CompiledEndpoint]
    revision: int = 0
    problems: tuple[str, ...] = ()
    """Selectors that failed validation and were left out (they allow nothing)."""
    memo: dict[tuple[str, str, int, int, str, bool], Any] = field(default_factory=dict)
    """Decisions already made with these rules (decision.decide fills it; bounded)."""

    def __len__(self) -> int:
        return len({id(ep) for ep in self.by_ip.values()})


EMPTY = RuleSet(by_ip={})


def _compile_prefix(text: str) -> tuple[int, int, int]:
    network = ipaddress.ip_network(text, strict=False)
    bits = 32 if network.version == 4 else 128
    mask = ((1 << network.prefixlen) - 1) << (bits - network.prefixlen)
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    return int(network.network_address), mask, int(family)


def _server_specs(servers: Sequence[ServerModel]) -> list[ServerSpec]:
    if not servers:
        # A rule without servers applies to any destination (Cilium's nil selector).
        return [ServerSpec((), 0, 0)]
    return [
        ServerSpec(tuple(_compile_prefix(p) for p in s.prefixes), s.port, s.protocol)
        for s in servers
    ]


def _normalise_suffix(suffix: str) -> str:
    text = suffix.strip().strip(".").lower()
    return f".{text}." if text else ""


def compile_endpoint(ep: EndpointModel, problems: list[str]) -> CompiledEndpoint:
    """Compile one endpoint's rules; invalid selectors are reported and left out."""
    by_server: dict[ServerSpec, tuple[list[FQDNSelector], list[int], list[int]]] = {}
    for index, rule in enumerate(ep.rules):
        selectors: list[FQDNSelector] = []
        for name in rule.match_names:
            try:
                selectors.append(FQDNSelector(match_name=name))
            except PolicyError as exc:
                problems.append(f"{rule.source.describe()}: matchName {name!r}: {exc}")
        for pattern in rule.match_patterns:
            try:
                selectors.append(FQDNSelector(match_pattern=pattern))
            except PolicyError as exc:
                problems.append(f"{rule.source.describe()}: matchPattern {pattern!r}: {exc}")
        for spec in _server_specs(rule.servers):
            group = by_server.setdefault(spec, ([], [], []))
            group[0].extend(selectors)
            group[1].extend([index] * len(selectors))
            if rule.allow_all:
                group[2].append(index)
    groups = tuple(
        RuleGroup(
            server=spec,
            matcher=compile_selectors(selectors),
            selector_rules=tuple(rule_of),
            allow_all_rule=allow_all[0] if allow_all else None,
        )
        for spec, (selectors, rule_of, allow_all) in by_server.items()
    )
    return CompiledEndpoint(
        endpoint_id=ep.endpoint_id,
        namespace=ep.namespace,
        pod_name=ep.pod_name,
        search_suffixes=tuple(s for s in (_normalise_suffix(x) for x in ep.search_suffixes) if s),
        groups=groups,
        sources=tuple(rule.source for rule in ep.rules),
    )


def compile_snapshot(model: SnapshotModel) -> RuleSet:
    """Compile a snapshot into a :class:`RuleSet` (pure; invalid selectors reported)."""
    problems: list[str] = []
    by_ip: dict[str, CompiledEndpoint] = {}
    for ep in model.endpoints:
        compiled = compile_endpoint(ep, problems)
        for ip in ep.ips:
            try:
                key = str(ipaddress.ip_address(ip))
            except ValueError as exc:
                problems.append(f"endpoint {ep.endpoint_id}: bad address {ip!r}: {exc}")
                continue
            by_ip[key] = compiled
    return RuleSet(by_ip=by_ip, revision=model.revision, problems=tuple(problems))


def source_names(sources: Iterable[RuleSourceModel], limit: int = 5) -> list[str]:
    """Distinct ``namespace/name`` of rule sources, for denial logs (bounded)."""
    seen: list[str] = []
    for source in sources:
        label = f"{source.namespace}/{source.name}" if source.namespace else source.name
        if label and label not in seen:
            seen.append(label)
            if len(seen) >= limit:
                break
    return seen
