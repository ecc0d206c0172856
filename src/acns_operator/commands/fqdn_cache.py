"""``acns fqdn cache list``: the agent's DNS cache, like ``cilium fqdn cache list``."""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

DEFAULT_AGENT_URL = "http://127.0.0.1:9962"


def fetch(url: str) -> Any:
    """GET JSON from the agent's inspection API."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our agent
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise click.ClickException(f"the agent answered {exc.code}: {message}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot reach the agent at {url}: {exc}") from exc


@click.group()
def cache() -> None:
    """The agent's cache of names and the IPs they resolved to."""


def format_rows(rows: list[dict[str, Any]], now: float) -> str:
    """Rows as cilium's table: Endpoint Source FQDN TTL ExpirationTime IPs."""
    grouped: dict[tuple[str, str, str, int, float], list[str]] = {}
    for row in rows:
        key = (row["endpoint"], row["source"], row["name"], row["ttl"], row["expiry"])
        grouped.setdefault(key, []).append(row["ip"])
    header = ("Endpoint", "Source", "FQDN", "TTL", "ExpirationTime", "IPs")
    lines = [header]
    for (endpoint, source, name, ttl, expiry), ips in sorted(grouped.items()):
        when = datetime.datetime.fromtimestamp(expiry, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
        lines.append((endpoint, source, name, str(ttl), when, ",".join(sorted(ips))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


@cache.command(name="list")
@click.option("--endpoint", help="Only this endpoint (pod IP).")
@click.option("--name", "matchname", help="Only this name.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--agent-url", default=DEFAULT_AGENT_URL, show_default=True, envvar="ACNS_AGENT_URL")
def list_cache(endpoint: str | None, matchname: str | None, output: str, agent_url: str) -> None:
    """List cached names, their IPs, TTLs and expiry (lookups and zombies)."""
    query = {k: v for k, v in {"endpoint": endpoint, "name": matchname}.items() if v}
    url = f"{agent_url.rstrip('/')}/v1/fqdn/cache"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    body = fetch(url)
    if output == "json":
        click.echo(json.dumps(body["entries"], indent=2))
    else:
        click.echo(format_rows(body["entries"], body["now"]))
