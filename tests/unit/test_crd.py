"""The generated CRDs: committed as generated, structural, and accepting what Cilium accepts.

There is no API server in unit tests, so a small checker here applies the parts of the
apiextensions.k8s.io/v1 rules our schema uses: the structural-schema rules, and value
validation as kube-apiserver does it with strict field validation (unknown fields
rejected, as ``kubectl apply`` does by default).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from acns_operator.api.crd import CRD_FILE_NAMES, crd_documents, crd_files
from acns_operator.cli import cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "policies"
INDEX: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "index.yaml").read_text())
CILIUM_NAME_PATTERN = r"^([-a-zA-Z0-9_]+[.]?)+$"
CILIUM_PATTERN_PATTERN = r"^([-a-zA-Z0-9_*]+[.]?)+$"
VALUE_VALIDATION_ONLY = {"properties", "required", "items", "not", "allOf", "anyOf", "oneOf"}


@functools.cache
def _documents() -> dict[str, dict[str, Any]]:
    # Generating the schema is the slow part; the tests only read the result.
    return crd_documents()


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = _documents()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """Violations of the structural-schema rules (a subset: those our generator can hit)."""
    problems = []
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    if "type" not in node and not int_or_string:
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if "x-kubernetes-preserve-unknown-fields" in node:
        problems.append(f"{path}: x-kubernetes-preserve-unknown-fields")
    for keyword in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(keyword, []):
            if int_or_string and keyword == "anyOf":
                continue
            extra = set(branch) - VALUE_VALIDATION_ONLY
            if extra:
                problems.append(f"{path}.{keyword}: non-validation keys {sorted(extra)}")
            for name, sub in branch.get("properties", {}).items():
                if name not in node.get("properties", {}):
                    problems.append(f"{path}.{keyword}: {name} is not a property of the node")
                if sub:
                    problems.append(f"{path}.{keyword}.{name}: must be empty")
    if node.get("x-kubernetes-list-type") == "map":
        required = set(node["items"].get("required", []))
        for key in node.get("x-kubernetes-list-map-keys", []):
            if key not in required:
                problems.append(f"{path}: list-map key {key} is not required")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    for keyword in ("items", "additionalProperties"):
        if isinstance(node.get(keyword), dict):
            problems += structural_problems(node[keyword], f"{path}.{keyword}")
    return problems


_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, _TYPES[expected])


def _pattern_ok(pattern: str, value: str) -> bool:
    if pattern == r"^\PC*$":  # Go's "no control/other characters"; Python re lacks \PC
        return value.isprintable()
    return re.search(pattern, value) is not None


def _is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return "/" in value


def schema_errors(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """What kube-apiserver would reject in ``value`` (strict field validation)."""
    if node.get("x-kubernetes-int-or-string"):
        if not (_type_ok("integer", value) or isinstance(value, str)):
            return [f"{path}: not an integer or string"]
        if isinstance(value, str) and "pattern" in node and not _pattern_ok(node["pattern"], value):
            return [f"{path}: does not match pattern"]
        return []
    if not _type_ok(node["type"], value):
        return [f"{path}: not of type {node['type']}"]
    errors: list[str] = []
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{path}: not in enum")
    if isinstance(value, str):
        if "pattern" in node and not _pattern_ok(node["pattern"], value):
            errors.append(f"{path}: does not match pattern")
        if len(value) > node.get("maxLength", len(value)):
            errors.append(f"{path}: too long")
        if len(value) < node.get("minLength", 0):
            errors.append(f"{path}: too short")
        if node.get("format") == "cidr" and not _is_cidr(value):
            errors.append(f"{path}: not a cidr")
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    if is_integer and not node.get("minimum", value) <= value <= node.get("maximum", value):
        errors.append(f"{path}: out of range")
    if isinstance(value, list):
        if len(value) > node.get("maxItems", len(value)) or len(value) < node.get("minItems", 0):
            errors.append(f"{path}: wrong number of items")
        if node.get("x-kubernetes-list-type") == "set" and len(set(value)) != len(value):
            errors.append(f"{path}: duplicate set items")
        for index, item in enumerate(value):
            errors += schema_errors(node["items"], item, f"{path}[{index}]")
    if isinstance(value, dict):
        properties = node.get("properties")
        for key in node.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
        for key, item in value.items():
            if properties is not None and key in properties:
                errors += schema_errors(properties[key], item, f"{path}.{key}")
            elif isinstance(node.get("additionalProperties"), dict):
                errors += schema_errors(node["additionalProperties"], item, f"{path}.{key}")
            elif properties is not None:
                errors.append(f"{path}.{key}: unknown field")
        if node.get("oneOf"):
            matching = [b for b in node["oneOf"] if all(k in value for k in b["required"])]
            if len(matching) != 1:
                errors.append(f"{path}: must match exactly one of oneOf")
        if node.get("anyOf") and not any(
            all(k in value for k in b["required"]) for b in node["anyOf"]
        ):
            errors.append(f"{path}: must match one of anyOf")
    return errors


def test_the_committed_crds_are_what_the_generator_produces() -> None:
    for name, text in crd_files().items():
        committed = (ROOT / "crds" / name).read_text(encoding="utf-8")
        assert committed == text, f"crds/{name} drifted: run `make crds` and commit"


def test_acns_crds_writes_both_files_into_the_output_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["crds", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for name, text in crd_files().items():
        assert (tmp_path / "out" / name).read_text(encoding="utf-8") == text


def test_acns_crds_without_a_folder_prints_both_crds_as_one_stream() -> None:
    result = CliRunner().invoke(cli, ["crds"])
    documents = [doc for doc in yaml.safe_load_all(result.output) if doc]
    assert sorted(doc["spec"]["names"]["kind"] for doc in documents) == sorted(CRD_FILE_NAMES)


@pytest.mark.parametrize(
    ("kind", "plural", "short_names", "scope"),
    [
        ("CiliumNetworkPolicy", "ciliumnetworkpolicies", ["cnp", "ciliumnp"], "Namespaced"),
        ("CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies", ["ccnp"], "Cluster"),
    ],
)
def test_each_crd_has_cilium_names_one_served_storage_version_and_a_status_subresource(
    kind: str, plural: str, short_names: list[str], scope: str
) -> None:
    crd = _documents()[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.cilium.io"
    spec = crd["spec"]
    assert spec["group"] == "cilium.io"
    assert spec["scope"] == scope
    assert spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == short_names
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v2", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert columns["Valid"]["jsonPath"] == ".status.conditions[?(@.type=='Valid')].status"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"


@pytest.mark.parametrize("kind", sorted(CRD_FILE_NAMES))
def test_each_crd_schema_is_structural_without_preserving_unknown_fields(kind: str) -> None:
    schema = _schema(kind)
    assert structural_problems(schema) == []
    # kube-apiserver refuses anything about metadata beyond its type.
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["metadata"]


def test_the_structural_checker_notices_a_schema_that_is_not_structural() -> None:
    broken = {
        "type": "object",
        "properties": {"a": {"description": "no type"}},
        "oneOf": [{"properties": {"b": {}}, "required": ["b"], "default": 1}],
    }
    problems = structural_problems(broken)
    assert any("no type" in problem for problem in problems)
    assert any("non-validation keys" in problem for problem in problems)
    assert any("b is not a property" in problem for problem in problems)


def _fqdn_selector_schemas(node: dict[str, Any], found: list[dict[str, Any]]) -> None:
    properties = node.get("properties", {})
    if "matchName" in properties and "matchPattern" in properties:
        found.append(node)
    for child in properties.values():
        _fqdn_selector_schemas(child, found)
    if isinstance(node.get("items"), dict):
        _fqdn_selector_schemas(node["items"], found)


def test_match_name_and_match_pattern_carry_ciliums_pattern_and_length_everywhere() -> None:
    found: list[dict[str, Any]] = []
    _fqdn_selector_schemas(_schema("CiliumNetworkPolicy"), found)
    # toFQDNs and rules.dns (egress), rules.dns (ingress), in spec and in specs.
    assert len(found) == 6
    for node in found:
        assert node["properties"]["matchName"]["pattern"] == CILIUM_NAME_PATTERN
        assert node["properties"]["matchPattern"]["pattern"] == CILIUM_PATTERN_PATTERN
        assert node["properties"]["matchName"]["maxLength"] == 255
        assert node["properties"]["matchPattern"]["maxLength"] == 255
        assert [branch["required"] for branch in node["oneOf"]] == [
            ["matchName"],
            ["matchPattern"],
        ]


def test_status_conditions_are_a_list_map_keyed_by_type_next_to_derivative_policies() -> None:
    status = _schema("CiliumNetworkPolicy")["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status"}
    derivative = status["properties"]["derivativePolicies"]["additionalProperties"]
    assert {"ok", "error", "lastUpdated", "localPolicyRevision", "enforcing", "annotations"} <= set(
        derivative["properties"]
    )


def test_egress_deny_has_no_to_fqdns_and_deny_ports_have_no_l7_rules() -> None:
    spec = _schema("CiliumNetworkPolicy")["properties"]["spec"]["properties"]
    deny = spec["egressDeny"]["items"]["properties"]
    assert "toFQDNs" not in deny
    assert "rules" not in deny["toPorts"]["items"]["properties"]
    assert "toFQDNs" in spec["egress"]["items"]["properties"]


def _fixture_objects(entry: dict[str, Any]) -> list[dict[str, Any]]:
    text = (FIXTURES / entry["file"]).read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


CRD_ENTRIES = [entry for entry in INDEX if entry["crd"] != "n/a"]


@pytest.mark.parametrize("entry", CRD_ENTRIES, ids=[entry["file"] for entry in CRD_ENTRIES])
def test_the_crd_accepts_or_rejects_each_fixture_as_the_index_records(
    entry: dict[str, Any],
) -> None:
    for obj in _fixture_objects(entry):
        errors = schema_errors(_schema(obj["kind"]), obj)
        if entry["crd"] == "accepted":
            assert errors == []
        else:
            assert errors, "the API server would have accepted this"
