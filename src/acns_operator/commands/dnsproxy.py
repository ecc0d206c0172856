"""``acns dnsproxy``: the per-node DNS proxy (see :mod:`acns_operator.dnsproxy`)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from acns_operator.errors import AcnsError


@click.command()
@click.option("--listen-address", help="Address of the UDP/TCP listeners [0.0.0.0].")
@click.option("--port", type=int, help="Port of the UDP/TCP listeners [10094].")
@click.option(
    "--upstream",
    metavar="HOST:PORT",
    help="Forward every query here instead of to its original destination.",
)
@click.option(
    "--rules-file",
    type=click.Path(dir_okay=False),
    help=(
        "Snapshot file (format acns-dnsproxy-snapshot/v1). Given without --agent-address: "
        "standalone mode, these rules only, no agent."
    ),
)
@click.option("--agent-address", help="gRPC target of the agent (unix:///PATH or HOST:PORT).")
@click.option(
    "--transparent/--no-transparent",
    default=None,
    help="IP_TRANSPARENT listeners for TPROXY [on; off in standalone mode].",
)
@click.option("--metrics-address", help="Address of /metrics, /healthz, /readyz [127.0.0.1].")
@click.option("--metrics-port", type=int, help="Port of /metrics, /healthz, /readyz (0: off).")
@click.option(
    "--reject-response-code",
    type=click.Choice(["refused", "nameError"]),
    help="Reply code for denied queries [refused].",
)
@click.option(
    "--search-suffix-help/--no-search-suffix-help", default=None, help="Musl/Alpine help."
)
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def dnsproxy(log_level: str, **options: Any) -> None:
    """Run the DNS proxy: filter queries by policy, forward, push mappings to the agent.

    Settings come from ACNS_DNSPROXY_* environment variables; options override them.
    Standalone (benchmarks, debugging):

        acns dnsproxy --rules-file snapshot.json --upstream 127.0.0.1:5353

    The rules file is the snapshot the proxy persists (JSON, format
    acns-dnsproxy-snapshot/v1, specified in acns_operator.dnsproxy.rules), so a node's
    /var/lib/acns/dnsproxy/snapshot.json is a ready example. The smallest one:

    \b
        {"format": "acns-dnsproxy-snapshot/v1", "endpoints": [
          {"ips": ["10.244.1.5"], "rules": [
            {"match_patterns": ["*.example.test"], "servers": []}]}]}
    """
    from acns_operator.dnsproxy.app import serve
    from acns_operator.settings import DnsProxySettings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {key: value for key, value in options.items() if value is not None}
    if options["rules_file"] is not None and options["agent_address"] is None:
        overrides["agent_address"] = None
        overrides.setdefault("transparent", False)
    try:
        settings = DnsProxySettings(**overrides)
        runner = _event_loop_runner(settings.use_uvloop)
        runner(serve(settings))
    except AcnsError as exc:
        click.echo(f"acns dnsproxy: {exc}", err=True)
        sys.exit(2)


def _event_loop_runner(use_uvloop: bool) -> Any:
    """``uvloop.run`` when asked for and installed, else ``asyncio.run``."""
    if use_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            return asyncio.run
        return uvloop.run
    return asyncio.run
