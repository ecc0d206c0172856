"""Label selectors: ``endpointSelector``, ``toEndpoints``, ``nodeSelector`` and friends.

Cilium wraps the Kubernetes ``LabelSelector``. Keys may carry a label *source* prefix
(``k8s:app``, ``any:app``, ``reserved:host``); an unprefixed key means ``any:``. The
helpers here read selectors the way Cilium does, for checks such as "does this DNS
peer select node-local DNS pods".
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from acns_operator.api.base import ApiModel, crd_extra

__all__ = [
    "LABEL_SOURCES",
    "LABEL_VALUE_PATTERN",
    "EndpointSelector",
    "LabelSelectorRequirement",
    "LabelValue",
    "selector_targets_label",
    "split_label_key",
]

LABEL_SOURCES = frozenset(
    {"any", "k8s", "reserved", "container", "cidr", "fqdn", "unspec", "cilium-generated"}
)
"""Label sources Cilium knows; ``source:key`` names a label from that source."""

LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
"""A Kubernetes label value (the CRD's pattern); at most 63 characters."""

LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class LabelSelectorRequirement(ApiModel):
    """One ``matchExpressions`` item: a key, an operator and maybe values."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["key", "operator"]))

    key: str | None = Field(default=None, description="The label key the requirement is on.")
    operator: Operator | None = Field(
        default=None,
        description="In and NotIn need values; Exists and DoesNotExist take none.",
    )
    values: list[str] | None = Field(
        default=None,
        description="The values for In and NotIn.",
        json_schema_extra=crd_extra(x_kubernetes_list_type="atomic"),
    )


class EndpointSelector(ApiModel):
    """A label selector; all requirements are ANDed, an empty selector selects all."""

    model_config = ConfigDict(json_schema_extra=crd_extra(x_kubernetes_map_type="atomic"))

    match_labels: dict[str, LabelValue] | None = Field(
        default=None,
        alias="matchLabels",
        description=(
            "Labels that must all be present with these values. Keys may carry a "
            "source prefix such as 'k8s:'."
        ),
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None,
        alias="matchExpressions",
        description="Set-based requirements, ANDed with matchLabels.",
        json_schema_extra=crd_extra(x_kubernetes_list_type="atomic"),
    )


def split_label_key(key: str) -> tuple[str, str]:
    """Split ``k8s:app`` into ``("k8s", "app")``; an unprefixed key has source ``any``.

    Only a known source counts as a prefix, so a key such as ``example.com:x`` is
    read whole, as Cilium does.
    """
    source, sep, rest = key.partition(":")
    if sep and source in LABEL_SOURCES:
        return source, rest
    return "any", key


def _source_fits(source: str, wanted_source: str) -> bool:
    # A pod's labels come from Kubernetes, so "any" and "k8s" both select them.
    return source == wanted_source or source == "any"


def selector_targets_label(
    selector: EndpointSelector, key: str, value: str, *, source: str = "k8s"
) -> bool:
    """Tell whether ``selector`` explicitly selects pods labelled ``key=value``.

    True when ``matchLabels`` has the key (unprefixed, or with a source prefix that can
    name a pod label) set to ``value``, or a ``matchExpressions`` item says
    ``key In [..., value, ...]``. A selector that merely happens to match such pods
    (the empty selector, say) does not count: this finds selectors written for them.
    """
    for raw_key, raw_value in (selector.match_labels or {}).items():
        label_source, label_key = split_label_key(raw_key)
        if label_key == key and raw_value == value and _source_fits(label_source, source):
            return True
    for requirement in selector.match_expressions or []:
        if requirement.key is None or requirement.operator != "In":
            continue
        label_source, label_key = split_label_key(requirement.key)
        if label_key != key or not _source_fits(label_source, source):
            continue
        if value in (requirement.values or []):
            return True
    return False
