"""CustomResourceDefinitions for both policy kinds, generated from the models.

The pydantic JSON schema is turned into a Kubernetes *structural* schema: references
inlined, ``Optional`` collapsed to the underlying type (Kubernetes drops nulls), titles,
``null`` defaults and ``additionalProperties: false`` removed, and the CRD-only
keywords each model declares (``oneOf`` between alternative fields, ``required``,
patterns, ``x-kubernetes-*`` list and map types) kept. No node uses
``x-kubernetes-preserve-unknown-fields``, as in upstream's CRD: unknown fields are
pruned by the API server, and reported by ``acns lint`` and the webhook.

Compared with upstream's current CRD, ``toPorts[].rules`` is deliberately wider:
it keeps ``kafka``, ``l7proto`` and ``l7`` (accepted by older Cilium releases) and has
no ``oneOf`` between ``http`` and ``dns``, so every policy any supported Cilium accepts
can be stored; validation then blocks what AKS does not support, and the operator marks
such stored policies ``Valid=False``.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from acns_operator.api.objects import (
    CCNP_KIND,
    CNP_KIND,
    GROUP,
    VERSION,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
)

__all__ = ["CRD_FILE_NAMES", "crd_documents", "crd_files", "render_crd", "structural_schema"]

CRD_FILE_NAMES: dict[str, str] = {
    CNP_KIND: "ciliumnetworkpolicies.cilium.io.yaml",
    CCNP_KIND: "ciliumclusterwidenetworkpolicies.cilium.io.yaml",
}
"""File name of each kind's CRD under ``crds/``."""

_NAMES: dict[str, dict[str, Any]] = {
    CNP_KIND: {
        "kind": CNP_KIND,
        "listKind": f"{CNP_KIND}List",
        "plural": "ciliumnetworkpolicies",
        "singular": "ciliumnetworkpolicy",
        "shortNames": ["cnp", "ciliumnp"],
        "categories": ["cilium", "ciliumpolicy"],
    },
    CCNP_KIND: {
        "kind": CCNP_KIND,
        "listKind": f"{CCNP_KIND}List",
        "plural": "ciliumclusterwidenetworkpolicies",
        "singular": "ciliumclusterwidenetworkpolicy",
        "shortNames": ["ccnp"],
        "categories": ["cilium", "ciliumpolicy"],
    },
}

_PRINTER_COLUMNS = [
    {
        "name": "Valid",
        "type": "string",
        "jsonPath": ".status.conditions[?(@.type=='Valid')].status",
        "description": "Whether the policy passed validation (the AKS profile).",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# JSON-schema keywords whose value is one schema, a map of schemas or a list of them.
_SCHEMA_KEYS = ("items", "additionalProperties")
_DROP_KEYS = ("title",)


def structural_schema(
    model: type[CiliumNetworkPolicy] | type[CiliumClusterwideNetworkPolicy],
) -> dict[str, Any]:
    """Return the structural ``openAPIV3Schema`` of ``model``."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    schema = _convert(raw, definitions)
    # The API server owns metadata: a CRD may say no more than that it is an object
    # (not even a description).
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _convert(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    reference = node.pop("$ref", None)
    if reference is not None:
        target = definitions[reference.rsplit("/", 1)[-1]]
        # Field-level keys (its own description) win over the referenced model's.
        node = _deep_merge(_convert(target, definitions), node)
    alternatives = node.get("anyOf")
    if isinstance(alternatives, list) and {"type": "null"} in alternatives:
        non_null = [branch for branch in alternatives if branch != {"type": "null"}]
        node.pop("anyOf")
        if len(non_null) == 1:
            node = _deep_merge(_convert(non_null[0], definitions), node)
        else:
            node["anyOf"] = non_null
    if node.get("default", 0) is None:
        node.pop("default")
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    for key in _DROP_KEYS:
        node.pop(key, None)
    if "description" in node:
        node["description"] = _plain_text(node["description"])
    if isinstance(node.get("properties"), dict):
        node["properties"] = {
            name: _convert(child, definitions) for name, child in node["properties"].items()
        }
    for key in _SCHEMA_KEYS:
        if isinstance(node.get(key), dict):
            node[key] = _convert(node[key], definitions)
    if "properties" in node and "type" not in node:
        node["type"] = "object"
    return node


def _plain_text(text: str) -> str:
    # Docstrings use reStructuredText literals; kubectl explain shows plain text.
    return " ".join(text.replace("``", "'").split())


def _version(
    model: type[CiliumNetworkPolicy] | type[CiliumClusterwideNetworkPolicy],
) -> dict[str, Any]:
    return {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": copy.deepcopy(_PRINTER_COLUMNS),
        "schema": {"openAPIV3Schema": structural_schema(model)},
    }


def crd_documents() -> dict[str, dict[str, Any]]:
    """Return the CRD object of each policy kind, keyed by kind."""
    documents: dict[str, dict[str, Any]] = {}
    for kind, model, scope in (
        (CNP_KIND, CiliumNetworkPolicy, "Namespaced"),
        (CCNP_KIND, CiliumClusterwideNetworkPolicy, "Cluster"),
    ):
        names = _NAMES[kind]
        documents[kind] = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{names['plural']}.{GROUP}"},
            "spec": {
                "group": GROUP,
                "names": copy.deepcopy(names),
                "scope": scope,
                "versions": [_version(model)],
            },
        }
    return documents


def render_crd(document: dict[str, Any]) -> str:
    """Render one CRD as YAML, byte-stable across runs (sorted keys, fixed width)."""
    header = "# Generated by `acns crds` from acns_operator.api; do not edit.\n---\n"
    return header + yaml.safe_dump(
        document, sort_keys=True, default_flow_style=False, width=100, allow_unicode=True
    )


def crd_files() -> dict[str, str]:
    """Return ``{file name: YAML text}`` for both CRDs, as committed under ``crds/``."""
    return {CRD_FILE_NAMES[kind]: render_crd(doc) for kind, doc in crd_documents().items()}
