"""Every setting of every program, in one typed place.

Each program reads its own class from the environment (prefix ``ACNS_``), from
command-line options that override fields, or from code that builds the object and
passes it down explicitly. Nothing reads settings at import time.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PolicySettings(BaseSettings):
    """How policies are judged: the AKS profile and the cluster facts it needs.

    Shared by ``acns lint``, the operator and the agent, which must agree exactly.
    """

    model_config = SettingsConfigDict(env_prefix="ACNS_", extra="forbid")

    cluster_domain: str = Field(
        default="cluster.local",
        description=(
            "The cluster DNS domain. toFQDNs names under it are Kubernetes service names, "
            "which AKS does not support as FQDN selectors."
        ),
    )
    node_local_dns_addresses: list[str] = Field(
        default_factory=lambda: ["169.254.20.10"],
        description=(
            "Addresses of node-local DNS caches. A DNS rule whose peer is one of them is "
            "blocked: FQDN filtering does not work with node-local DNS on AKS."
        ),
    )
    node_local_dns_labels: dict[str, str] = Field(
        default_factory=lambda: {"k8s-app": "node-local-dns"},
        description=(
            "Pod labels that identify node-local DNS pods. A DNS rule whose toEndpoints "
            "selector requires these labels is blocked."
        ),
    )
    allow_multilevel_prefix: bool = Field(
        default=True,
        description=(
            "Accept the leading '**.' multi-label wildcard (Cilium >= 1.19) with a warning. "
            "When false it is blocked, for clusters on older Cilium where '**.' means '*.'."
        ),
    )
