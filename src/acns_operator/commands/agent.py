"""``acns agent``: the node agent (DaemonSet, host network, NET_ADMIN)."""

from __future__ import annotations

import logging
from typing import Any

import click

from acns_operator.errors import AcnsError
from acns_operator.settings import AgentSettings, PolicySettings


@click.command()
@click.option("--node", "node_name", envvar="ACNS_AGENT_NODE_NAME", help="This node's name.")
@click.option("--kubeconfig", help="kubeconfig path (default: in-cluster or $KUBECONFIG).")
@click.option(
    "--backend", type=click.Choice(["auto", "nftables", "memory"]), help="Enforcement backend."
)
@click.option("--netns", help="Enforce in this named network namespace (default: our own).")
@click.option("--state-dir", help="Where the policy-map store is persisted.")
@click.option("--grpc-socket", help="Unix socket of the FQDNData service for the DNS proxy.")
@click.option("--grpc-tcp-port", type=int, help="Also serve FQDNData on 127.0.0.1:PORT.")
@click.option("--http-host", help="Address of the inspection API and /metrics.")
@click.option("--http-port", type=int, help="Port of the inspection API and /metrics.")
@click.option("--proxy-port", type=int, help="Port of the DNS proxy DNS is redirected to.")
@click.option("--gc-interval", type=float, help="Seconds between DNS garbage collections.")
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def agent(log_level: str, **options: Any) -> None:
    """Run the node agent: compile policies, enforce egress, serve the DNS proxy.

    Every option also reads ACNS_AGENT_<NAME> from the environment; options win.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {key: value for key, value in options.items() if value is not None}
    try:
        settings = AgentSettings(**overrides)
        if not settings.node_name:
            raise click.UsageError("--node (or ACNS_AGENT_NODE_NAME) is required")
        from acns_operator.agent.app import run_agent

        run_agent(settings, PolicySettings())
    except AcnsError as exc:
        raise click.ClickException(str(exc)) from exc
