"""``acns explain``: may this pod reach this name, and which policy and rule decide.

Online it asks the agent (``--agent-url``); offline (``-f`` policy files or folders) it
compiles the given policies for a pod described by ``--namespace-labels`` and
``--labels``, with the same validation and compiler the agent uses.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import click

from acns_operator.api.sources import expand_paths, load_source
from acns_operator.commands.fqdn_cache import DEFAULT_AGENT_URL, fetch
from acns_operator.errors import AcnsError
from acns_operator.policy import validate
from acns_operator.policy.compile import ClusterSnapshot, CompileOptions, Pod, compile_snapshot
from acns_operator.policy.explain import explain as explain_rules
from acns_operator.settings import PolicySettings


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            if not item:
                continue
            key, sep, val = item.partition("=")
            if not sep:
                raise click.BadParameter(f"{item!r} is not KEY=VALUE")
            out[key.strip()] = val.strip()
    return out


def explain_offline(
    files: tuple[str, ...],
    namespace: str,
    name: str,
    labels: dict[str, str],
    namespace_labels: dict[str, str],
    fqdn: str,
    port: int | None,
    protocol: str,
) -> dict[str, Any]:
    """Compile the policies in ``files`` for the described pod and explain."""
    settings = PolicySettings()
    snapshot = ClusterSnapshot(namespaces={namespace: namespace_labels})
    blocked: list[str] = []
    for path in expand_paths(list(files)):
        for document in load_source(path):
            if not isinstance(document.body, dict):
                continue
            verdict = validate(document.body, settings)
            if verdict.admitted and verdict.policy is not None:
                snapshot.policies.append(verdict.policy)
            elif verdict.policy is not None:
                blocked.append(f"{document.location}: {verdict.summary}")
    # An address is needed for the pod to count as an endpoint; it is never used.
    snapshot.pods.append(Pod(namespace, name, labels, "192.0.2.1", "local"))
    compiler = compile_snapshot(snapshot, CompileOptions(node_name="local"))
    result = explain_rules(compiler.compile(f"{namespace}/{name}"), fqdn, port, protocol=protocol)
    return result.to_dict() | {"pod": f"{namespace}/{name}", "blocked_policies": blocked}


@click.command()
@click.option("--pod", required=True, metavar="NS/NAME", help="The pod.")
@click.option("--fqdn", required=True, help="The name it wants to reach.")
@click.option("--port", type=int, help="The destination port.")
@click.option(
    "--protocol", default="TCP", show_default=True, type=click.Choice(["TCP", "UDP", "SCTP"])
)
@click.option("-f", "--filename", "files", multiple=True, help="Policy files or folders (offline).")
@click.option("--labels", multiple=True, help="Offline: the pod's labels, KEY=VALUE[,...].")
@click.option("--namespace-labels", multiple=True, help="Offline: its namespace's labels.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--agent-url", default=DEFAULT_AGENT_URL, show_default=True, envvar="ACNS_AGENT_URL")
def explain(
    pod: str,
    fqdn: str,
    port: int | None,
    protocol: str,
    files: tuple[str, ...],
    labels: tuple[str, ...],
    namespace_labels: tuple[str, ...],
    output: str,
    agent_url: str,
) -> None:
    """Say whether POD may reach FQDN (on PORT), and which policy and rule decided.

    Exit status: 0 allowed, 1 denied, 2 usage error.
    """
    namespace, sep, name = pod.partition("/")
    if not sep or not namespace or not name:
        raise click.BadParameter("use NAMESPACE/NAME", param_hint="--pod")
    try:
        if files:
            result = explain_offline(
                files,
                namespace,
                name,
                _labels(labels),
                _labels(namespace_labels),
                fqdn,
                port,
                protocol,
            )
        else:
            query = {"pod": pod, "fqdn": fqdn, "protocol": protocol}
            if port is not None:
                query["port"] = str(port)
            result = fetch(f"{agent_url.rstrip('/')}/v1/explain?{urllib.parse.urlencode(query)}")
    except AcnsError as exc:
        raise click.ClickException(str(exc)) from exc
    if output == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        verdict = "ALLOWED" if result["allowed"] else "DENIED"
        click.echo(f"{verdict}: {pod} -> {fqdn}{f':{port}' if port else ''}")
        click.echo(f"  reason: {result['reason']}")
        if result.get("decided_by"):
            click.echo(f"  decided by: {result['decided_by']}")
        for step in result.get("steps", []):
            click.echo(f"  - {step}")
        for blocked in result.get("blocked_policies", []):
            click.echo(f"  ! not enforced: {blocked}")
    raise SystemExit(0 if result["allowed"] else 1)
