"""``acns lint PATH...``: which policies AKS would admit or block, and why, before deploying.

Exit status: 0 when every policy is admitted (warnings allowed), 1 when any is blocked,
2 when some input cannot be read or parsed (the file and line are named). Objects that
are not Cilium network policies (Deployments, Kubernetes NetworkPolicies ...) are
skipped and listed as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from acns_operator.api.documents import Document
from acns_operator.api.findings import ERROR, Finding
from acns_operator.api.parsing import is_policy_kind
from acns_operator.api.sources import expand_paths, load_source
from acns_operator.errors import InputError
from acns_operator.policy.validation import validate
from acns_operator.settings import PolicySettings

__all__ = ["LintResult", "exit_code", "lint", "lint_document", "lint_paths"]

Outcome = Literal["admitted", "blocked", "skipped", "unreadable"]

EXIT_OK = 0
EXIT_BLOCKED = 1
EXIT_INPUT = 2


@dataclass(frozen=True)
class LintResult:
    """The outcome for one object, or for one input that could not be read."""

    file: str
    outcome: Outcome
    document: int | None = None
    item: int | None = None
    line: int | None = None
    kind: str | None = None
    api_version: str | None = None
    namespace: str | None = None
    name: str | None = None
    findings: list[Finding] = field(default_factory=list)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``acns lint --output json`` prints a list of these)."""
        data: dict[str, Any] = {
            "file": self.file,
            "document": self.document,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "verdict": self.outcome,
            "findings": [
                {"path": f.path, "severity": f.severity, "message": f.message, "rule": f.rule}
                for f in self.findings
            ],
        }
        if self.item is not None:
            data["item"] = self.item
        if self.line is not None:
            data["line"] = self.line
        if self.reason is not None:
            data["reason"] = self.reason
        return data


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def lint_document(document: Document, settings: PolicySettings) -> LintResult:
    """Judge one parsed document."""
    body = document.body
    common: dict[str, Any] = {
        "file": document.source,
        "document": document.index,
        "item": document.item,
        "line": document.line,
    }
    if not isinstance(body, dict):
        return LintResult(
            outcome="unreadable",
            reason="not a Kubernetes object (expected a mapping with apiVersion and kind)",
            **common,
        )
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    common.update(
        kind=_text(body.get("kind")),
        api_version=_text(body.get("apiVersion")),
        namespace=_text(metadata.get("namespace")),
        name=_text(metadata.get("name")),
    )
    if not is_policy_kind(body):
        kind = common["kind"]
        reason = (
            f"{common['api_version'] or '?'} {kind} is not a Cilium network policy"
            if kind
            else "no kind: not a Kubernetes object"
        )
        return LintResult(outcome="skipped", reason=reason, **common)
    verdict = validate(body, settings)
    outcome: Outcome = "admitted" if verdict.admitted else "blocked"
    return LintResult(outcome=outcome, findings=verdict.findings, reason=verdict.summary, **common)


def lint_paths(
    paths: Sequence[str], settings: PolicySettings, stdin: Any = None
) -> list[LintResult]:
    """Judge every object in ``paths`` (files, folders, ``-``), in input order."""
    results: list[LintResult] = []
    for path in expand_paths(paths):
        try:
            documents = load_source(path, stdin)
        except InputError as exc:
            results.append(
                LintResult(
                    file=path,
                    outcome="unreadable",
                    reason=str(exc),
                    line=getattr(exc, "line", None),
                )
            )
            continue
        results.extend(lint_document(document, settings) for document in documents)
    return results


def exit_code(results: Iterable[LintResult]) -> int:
    """2 if anything was unreadable, else 1 if anything was blocked, else 0."""
    outcomes = {result.outcome for result in results}
    if "unreadable" in outcomes:
        return EXIT_INPUT
    if "blocked" in outcomes:
        return EXIT_BLOCKED
    return EXIT_OK


def _where(result: LintResult) -> str:
    where = result.file
    if result.line is not None:
        where += f":{result.line}"
    return where


def _label(result: LintResult) -> str:
    name = result.name or "(no name)"
    if result.namespace:
        name = f"{result.namespace}/{name}"
    return f"{result.kind or 'object'} {name}"


def render_text(results: Sequence[LintResult]) -> str:
    """The human-readable report: one block per object, then a summary line."""
    lines: list[str] = []
    for result in results:
        if result.outcome == "unreadable":
            if result.document is None:
                lines.append(f"{result.reason}")
            else:
                lines.append(f"{_where(result)}: document {result.document}: {result.reason}")
            continue
        if result.outcome == "skipped":
            lines.append(f"{_where(result)}: {_label(result)}: skipped ({result.reason})")
            continue
        lines.append(f"{_where(result)}: {_label(result)}: {result.reason}")
        ordered = [f for f in result.findings if f.severity == ERROR] + [
            f for f in result.findings if f.severity != ERROR
        ]
        for finding in ordered:
            path = finding.path or "(object)"
            lines.append(f"  {finding.severity}: {path}: {finding.message}")
    counts = dict.fromkeys(("admitted", "blocked", "skipped", "unreadable"), 0)
    for result in results:
        counts[result.outcome] += 1
    summary = ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
    lines.append(f"\n{summary or 'no objects found'}")
    return "\n".join(lines)


def _settings(
    cluster_domain: str | None,
    node_local_dns_addresses: Sequence[str],
    multilevel_prefix: bool | None,
) -> PolicySettings:
    overrides: dict[str, Any] = {}
    if cluster_domain is not None:
        overrides["cluster_domain"] = cluster_domain
    if node_local_dns_addresses:
        overrides["node_local_dns_addresses"] = list(node_local_dns_addresses)
    if multilevel_prefix is not None:
        overrides["allow_multilevel_prefix"] = multilevel_prefix
    try:
        return PolicySettings(**overrides)
    except SettingsError as exc:
        raise click.UsageError(f"invalid policy settings in the environment: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise click.UsageError(f"invalid policy settings: {problems}") from None


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Report format.",
)
@click.option(
    "--cluster-domain",
    default=None,
    help="The cluster DNS domain [default: cluster.local, or ACNS_CLUSTER_DOMAIN].",
)
@click.option(
    "--node-local-dns-address",
    "node_local_dns_addresses",
    multiple=True,
    help="An address of node-local DNS (repeatable) [default: 169.254.20.10].",
)
@click.option(
    "--multilevel-prefix/--no-multilevel-prefix",
    default=None,
    help="Accept a leading '**.' with a warning (Cilium >= 1.19, the default), or block it.",
)
def lint(
    paths: tuple[str, ...],
    output: str,
    cluster_domain: str | None,
    node_local_dns_addresses: tuple[str, ...],
    multilevel_prefix: bool | None,
) -> None:
    """Check policy files against the AKS profile before deploying them.

    PATHS are files, folders (searched recursively for *.yaml, *.yml and *.json) or
    '-' for standard input; YAML may hold several documents, JSON may be a List.
    """
    settings = _settings(cluster_domain, node_local_dns_addresses, multilevel_prefix)
    try:
        results = lint_paths(paths, settings)
    except Exception as exc:
        click.echo(f"acns lint: internal error ({type(exc).__name__}: {exc})", err=True)
        raise SystemExit(EXIT_INPUT) from None
    if output == "json":
        click.echo(json.dumps([result.to_dict() for result in results], indent=2))
    else:
        click.echo(render_text(results))
    raise SystemExit(exit_code(results))
