"""The base of every cilium.io/v2 model: strict, closed, camelCase on the wire.

Why these settings:

* ``extra="forbid"``: an unknown field is a finding with its path, never silently
  dropped (:mod:`acns_operator.api.parsing` turns the error into the finding).
* ``strict=True``: the API server checks JSON types (``port: 53`` is an integer where a
  string is required, and is rejected), so parsing must not coerce either.
* ``populate_by_name=True``: code builds models with Python names; the wire uses
  Cilium's aliases (``toFQDNs``, ``toCIDRSet`` ...), which are spelled out per field
  because no generic camelCase rule produces them.

Every field is optional in the Python model even when Cilium's CRD requires it: a
missing field is reported by validation with a message naming it, and the CRD
generator takes ``required`` from each model's ``json_schema_extra`` instead.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ApiModel", "crd_extra"]


def crd_extra(**schema: Any) -> dict[str, Any]:
    """Return a ``json_schema_extra`` dict for CRD-only schema keywords.

    Keyword names use underscores where the schema uses dashes, so
    ``x_kubernetes_list_type="atomic"`` becomes ``x-kubernetes-list-type``. These
    keywords reach the CRD but pydantic does not enforce them.
    """
    return {key.replace("_", "-"): value for key, value in schema.items()}


class ApiModel(BaseModel):
    """A closed, strictly typed cilium.io object part, serialised by alias."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """Return the object as Kubernetes stores it: aliases, absent fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
