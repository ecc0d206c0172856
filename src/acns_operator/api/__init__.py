"""The ``cilium.io/v2`` policy API: models, parsing, documents and CRD generation.

* :mod:`~acns_operator.api.objects`, :mod:`~acns_operator.api.rules`,
  :mod:`~acns_operator.api.ports`, :mod:`~acns_operator.api.peers`,
  :mod:`~acns_operator.api.selectors`: pydantic models of CiliumNetworkPolicy and
  CiliumClusterwideNetworkPolicy, field for field as upstream Cilium defines them;
* :mod:`~acns_operator.api.parsing`: :func:`parse_policy`, arbitrary input to a model
  plus findings (unknown fields and wrong types with their paths), never raising;
* :mod:`~acns_operator.api.documents` / :mod:`~acns_operator.api.sources`: objects out
  of YAML/JSON text, files, folders and stdin;
* :mod:`~acns_operator.api.crd`: the CRDs under ``crds/``, generated from the models.
"""

from acns_operator.api.findings import ERROR, WARNING, Finding, Severity, format_path
from acns_operator.api.objects import (
    API_VERSION,
    CCNP_KIND,
    CNP_KIND,
    POLICY_KINDS,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    PolicyObject,
)
from acns_operator.api.parsing import ParsedPolicy, is_policy_kind, parse_policy

__all__ = [
    "API_VERSION",
    "CCNP_KIND",
    "CNP_KIND",
    "ERROR",
    "POLICY_KINDS",
    "WARNING",
    "CiliumClusterwideNetworkPolicy",
    "CiliumNetworkPolicy",
    "Finding",
    "ParsedPolicy",
    "PolicyObject",
    "Severity",
    "format_path",
    "is_policy_kind",
    "parse_policy",
]
