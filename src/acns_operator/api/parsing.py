"""Turn arbitrary input into a policy model plus findings, without ever raising.

Pydantic reports every problem of a document in one pass, each with its location.
Each problem becomes a :class:`~acns_operator.api.findings.Finding` whose message
names the field and says what to do; then the offending value is taken out of a copy
of the document and parsing is retried, so the rest of the policy is still checked.

How values are taken out keeps the paths of later findings true: a bad map key is
deleted (no index moves), a bad list item is replaced by an empty object, and if that
does not fit either, the whole list is dropped from its parent object. The resulting
model is "what could be understood"; a policy with any parse finding is blocked anyway.
"""

from __future__ import annotations

import copy
import difflib
import types
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from acns_operator.api.findings import ERROR, Finding, format_path
from acns_operator.api.objects import (
    API_VERSION,
    CCNP_KIND,
    CNP_KIND,
    POLICY_KINDS,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    PolicyObject,
)

__all__ = ["ParsedPolicy", "is_policy_kind", "parse_policy"]

_MAX_ROUNDS = 8
"""Parse attempts before giving up; pydantic reports nearly everything in the first."""

Loc = tuple[int | str, ...]

_MODELS: dict[str, type[CiliumNetworkPolicy] | type[CiliumClusterwideNetworkPolicy]] = {
    CNP_KIND: CiliumNetworkPolicy,
    CCNP_KIND: CiliumClusterwideNetworkPolicy,
}

# Unknown fields people write by mistake, and what they probably meant.
_UNKNOWN_FIELD_HINTS: dict[str, str] = {
    "ports": 'ports go inside a toPorts item: toPorts: [{ports: [{port: "443", protocol: TCP}]}]',
    "to": "'to' is Kubernetes NetworkPolicy syntax; Cilium uses toEndpoints, toCIDR, "
    "toFQDNs ... in each egress rule",
    "from": "'from' is Kubernetes NetworkPolicy syntax; Cilium uses fromEndpoints, "
    "fromCIDR ... in each ingress rule",
    "podSelector": "podSelector is Kubernetes NetworkPolicy syntax; Cilium uses "
    "endpointSelector (and toEndpoints/fromEndpoints in rules)",
    "policyTypes": "policyTypes is Kubernetes NetworkPolicy syntax; a Cilium rule applies "
    "to the directions it has sections for (ingress, egress ...)",
    "fromFQDNs": "Cilium has no fromFQDNs: DNS names can only select egress peers (toFQDNs)",
}
_DENY_HINTS: dict[str, str] = {
    "toFQDNs": "toFQDNs is not allowed in egressDeny: Cilium cannot deny traffic by DNS "
    "name. List the names that are allowed in an egress rule instead; everything else "
    "is denied once an egress rule selects the pods",
    "rules": "deny rules cannot have L7 rules; only ports can be denied",
}


@dataclass(frozen=True)
class ParsedPolicy:
    """The outcome of :func:`parse_policy`.

    ``policy`` is None when the input is not a Cilium policy object at all or could
    not be understood; ``findings`` are the parse problems (all errors); ``pruned``
    are the paths whose values were taken out to build ``policy``, so that later checks
    do not report them again as missing.
    """

    kind: str | None
    policy: PolicyObject | None
    findings: list[Finding] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


def is_policy_kind(obj: object) -> bool:
    """Tell whether ``obj`` claims to be a CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.

    Only the kind counts: an object with a Cilium policy kind and a wrong apiVersion
    is still a policy, and parsing reports the apiVersion.
    """
    return isinstance(obj, Mapping) and obj.get("kind") in POLICY_KINDS


def parse_policy(obj: object) -> ParsedPolicy:
    """Parse ``obj`` (e.g. one YAML document) into a policy model and findings.

    Never raises: anything that is not a well-formed ``cilium.io/v2`` policy comes back
    as error findings with paths.
    """
    if not isinstance(obj, Mapping):
        return ParsedPolicy(
            kind=None,
            policy=None,
            findings=[
                Finding(
                    ERROR,
                    "",
                    f"expected a Kubernetes object (a mapping), got {_type_name(obj)}",
                    "schema.not-an-object",
                )
            ],
        )
    kind = obj.get("kind")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None or not isinstance(kind, str):
        shown = repr(kind) if kind is not None else "none"
        return ParsedPolicy(
            kind=kind if isinstance(kind, str) else None,
            policy=None,
            findings=[
                Finding(
                    ERROR,
                    "kind",
                    f"kind is {shown}; expected {CNP_KIND} or {CCNP_KIND}",
                    "schema.kind",
                )
            ],
        )
    findings: list[Finding] = []
    if obj.get("apiVersion") != API_VERSION:
        findings.append(
            Finding(
                ERROR,
                "apiVersion",
                f"apiVersion is {obj.get('apiVersion')!r}; {kind} exists only as "
                f"{API_VERSION}, so set apiVersion: {API_VERSION}",
                "schema.api-version",
            )
        )
    pruned: set[Loc] = set()
    policy = _validate_with_recovery(model, obj, kind, findings, pruned)
    paths = sorted({format_path([part for part in loc if part != "[key]"]) for loc in pruned})
    return ParsedPolicy(kind=kind, policy=policy, findings=findings, pruned=paths)


def _validate_with_recovery(
    model: type[CiliumNetworkPolicy] | type[CiliumClusterwideNetworkPolicy],
    obj: Mapping[Any, Any],
    kind: str,
    findings: list[Finding],
    pruned: set[Loc],
) -> PolicyObject | None:
    data: Any = _copy(obj)
    reported: set[Loc] = set()
    synthetic: set[Loc] = set()
    for _ in range(_MAX_ROUNDS):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            progressed = False
            for error in exc.errors(include_url=False):
                loc: Loc = tuple(error["loc"])
                if loc not in synthetic and loc not in reported:
                    reported.add(loc)
                    findings.append(_finding(error, loc, model, kind))
                if _remove(data, loc, synthetic, pruned):
                    progressed = True
            if not progressed:
                break
        except RecursionError:
            break
    return None


def _copy(obj: Mapping[Any, Any]) -> Any:
    # Parsing edits its copy; the caller's document stays as it was. A document that
    # cannot be copied (exotic objects from code, not from YAML or JSON) is parsed as is
    # after a shallow copy, which is enough for top-level edits.
    try:
        return copy.deepcopy(dict(obj))
    except Exception:
        return dict(obj)


def _remove(data: Any, loc: Loc, synthetic: set[Loc], pruned: set[Loc]) -> bool:
    """Take the value at ``loc`` out of ``data``; say whether anything changed."""
    if not loc:
        return False
    if loc[-1] == "[key]":
        # A bad map key: pydantic reports (..., key, "[key]").
        return _delete_key(data, loc[:-2], loc[-2], pruned)
    parent = _lookup(data, loc[:-1])
    last = loc[-1]
    if isinstance(parent, MutableMapping):
        return _delete_key(data, loc[:-1], last, pruned)
    if isinstance(parent, MutableSequence) and isinstance(last, int):
        if (
            0 <= last < len(parent)
            and loc not in synthetic
            and not isinstance(parent[last], Mapping)
        ):
            parent[last] = {}
            synthetic.add(loc)
            pruned.add(loc)
            return True
        # An object does not fit this list either: drop the list from its parent.
        return _remove(data, loc[:-1], synthetic, pruned)
    return False


def _delete_key(data: Any, parent_loc: Loc, key: Any, pruned: set[Loc]) -> bool:
    parent = _lookup(data, parent_loc)
    if isinstance(parent, MutableMapping) and key in parent:
        del parent[key]
        pruned.add((*parent_loc, key))
        return True
    return False


def _lookup(data: Any, loc: Loc) -> Any:
    current = data
    for part in loc:
        current = _child(current, part)
        if current is _MISSING:
            return None
    return current


_MISSING = object()


def _child(container: Any, part: int | str) -> Any:
    if isinstance(container, Mapping):
        return container.get(part, _MISSING)
    is_list = isinstance(container, Sequence) and not isinstance(container, str | bytes)
    if is_list and isinstance(part, int) and 0 <= part < len(container):
        return container[part]
    return _MISSING


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "bool_type": "a boolean (true or false)",
    "list_type": "a list",
    "dict_type": "an object (a mapping of field names to values)",
    "model_type": "an object (a mapping of field names to values)",
    "model_attributes_type": "an object (a mapping of field names to values)",
}


def _finding(error: Any, loc: Loc, model: type[BaseModel], kind: str) -> Finding:
    kind_of_error = error["type"]
    path = format_path([part for part in loc if part != "[key]"])
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind_of_error == "extra_forbidden":
        return Finding(
            ERROR, path, _unknown_field_message(loc, model, kind), "schema.unknown-field"
        )
    if kind_of_error in _EXPECTED:
        message = f"must be {_EXPECTED[kind_of_error]}, not {_type_name(value)}"
        if loc and loc[-1] in ("port",) and isinstance(value, int | float):
            message += f'; quote the number: port: "{value}"'
        return Finding(ERROR, path, message, "schema.type")
    if kind_of_error == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return Finding(
            ERROR, path, f"{value!r} is not allowed here; use one of: {expected}", "schema.enum"
        )
    if kind_of_error == "too_long":
        return Finding(
            ERROR,
            path,
            f"has {ctx.get('actual_length')} items; at most {ctx.get('max_length')} are "
            "allowed (split them over several toPorts items or rules)",
            "schema.too-many-items",
        )
    if kind_of_error == "too_short":
        return Finding(
            ERROR,
            path,
            f"must have at least {ctx.get('min_length')} item(s); remove the field instead "
            "of leaving it empty",
            "schema.too-few-items",
        )
    if kind_of_error == "string_too_long":
        return Finding(
            ERROR,
            path,
            f"is {len(value) if isinstance(value, str) else '?'} characters long; at most "
            f"{ctx.get('max_length')} are allowed",
            "schema.too-long",
        )
    if kind_of_error == "string_too_short":
        return Finding(ERROR, path, "must not be empty", "schema.too-short")
    if kind_of_error in ("greater_than_equal", "less_than_equal"):
        bounds = _bounds(loc, model)
        return Finding(
            ERROR, path, f"{value!r} is out of range; use {bounds}", "schema.out-of-range"
        )
    if kind_of_error == "string_pattern_mismatch":
        if "matchLabels" in loc:
            message = (
                f"{value!r} is not a valid label value: at most 63 characters, letters, "
                "digits, '-', '_' and '.', starting and ending with a letter or digit"
            )
        else:
            message = f"{value!r} does not have the required form ({ctx.get('pattern')})"
        return Finding(ERROR, path, message, "schema.pattern")
    if kind_of_error == "invalid_key":
        return Finding(ERROR, path, "keys must be strings", "schema.type")
    if kind_of_error == "value_error":
        return Finding(ERROR, path, str(ctx.get("error", error["msg"])), "schema.value")
    if kind_of_error == "recursion_loop":
        return Finding(
            ERROR,
            path,
            "the value refers to itself (YAML anchors that form a cycle)",
            "schema.recursion",
        )
    return Finding(ERROR, path, str(error.get("msg", "is not valid")), "schema.invalid")


def _bounds(loc: Loc, model: type[BaseModel]) -> str:
    info = _field_info(model, loc)
    low = high = None
    for constraint in getattr(info, "metadata", []) if info is not None else []:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    if low is not None and high is not None:
        return f"a number from {low} to {high}"
    return "a number in the allowed range"


def _unknown_field_message(loc: Loc, model: type[BaseModel], kind: str) -> str:
    name = str(loc[-1])
    container = _model_at(model, loc[:-1])
    if container is None:
        return f"unknown field {name!r}; remove it"
    deny_hint = _DENY_HINTS.get(name)
    in_deny = any(part in ("egressDeny", "ingressDeny") for part in loc)
    if deny_hint is not None and in_deny:
        return deny_hint
    where = "the object" if not loc[:-1] else format_path(loc[:-1])
    message = f"unknown field {name!r} in {where}: {kind} has no such field here"
    hint = _UNKNOWN_FIELD_HINTS.get(name)
    known = [info.alias or field_name for field_name, info in container.model_fields.items()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    if close:
        message += f"; did you mean {close[0]!r}?"
    elif hint is not None:
        message += f"; {hint}"
    else:
        message += f"; allowed fields are {', '.join(sorted(known))}"
    return message


def _field_info(model: type[BaseModel], loc: Loc) -> Any:
    container = _model_at(model, loc[:-1])
    if container is None or not loc:
        return None
    for field_name, info in container.model_fields.items():
        if (info.alias or field_name) == loc[-1]:
            return info
    return None


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that holds the fields at ``loc`` (following lists and maps)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            continue  # a list index: _unwrap already stepped into the item type
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found = None
            for field_name, info in annotation.model_fields.items():
                if (info.alias or field_name) == part:
                    found = info.annotation
                    break
            if found is None:
                return None
            annotation = found
        else:
            continue  # a map key: _unwrap stepped into the value type
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Optional, list[...] and dict[str, ...] down to the item type."""
    while True:
        origin = get_origin(annotation)
        if origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        elif origin is list:
            annotation = get_args(annotation)[0]
        elif origin is dict:
            annotation = get_args(annotation)[1]
        else:
            return annotation
