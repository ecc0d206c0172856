"""The agent's local HTTP API (JSON) and ``/metrics``.

=====================================  ================================================
``GET /healthz``                       200 once running
``GET /readyz``                        200 once the first full sync is done
``GET /v1/status``                     sync state, snapshot revision and acks, selectors
``GET /v1/fqdn/cache``                 the DNS cache like ``cilium fqdn cache list``;
                                       ``?endpoint=IP&name=NAME`` filter it
``GET /v1/endpoints``                  compiled rules per local endpoint
``GET /v1/explain?pod=NS/NAME&fqdn=N``  allowed or denied, and which rule decided
                                       (``&port=P&protocol=TCP``)
``GET /metrics``                       Prometheus
=====================================  ================================================

Bound to loopback by default: it shows which pod resolved which names.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from acns_operator.fqdn.names import to_fqdn
from acns_operator.policy.explain import explain

if TYPE_CHECKING:
    from acns_operator.agent.app import Agent


def cache_rows(agent: Agent, endpoint: str | None, name: str | None) -> list[dict[str, Any]]:
    """The cache as JSON rows."""
    rows = agent.store.rows(endpoint=endpoint, name=to_fqdn(name) if name else None)
    return [dataclasses.asdict(row) for row in rows]


def make_app(agent: Agent) -> web.Application:
    """The aiohttp application serving the routes in the module doc."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        ready = agent.synced.is_set()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(agent.status())

    async def cache(request: web.Request) -> web.Response:
        query = request.query
        rows = cache_rows(agent, query.get("endpoint"), query.get("name"))
        return web.json_response({"now": agent.clock.now(), "entries": rows})

    async def endpoints(_: web.Request) -> web.Response:
        body = {key: dataclasses.asdict(rules) for key, rules in sorted(agent.rules.items())}
        return web.json_response(body, dumps=_dumps)

    async def explain_route(request: web.Request) -> web.Response:
        pod = request.query.get("pod", "")
        fqdn = request.query.get("fqdn", "")
        if "/" not in pod or not fqdn:
            return web.json_response(
                {"error": "pod=NAMESPACE/NAME and fqdn= are required"}, status=400
            )
        port_text = request.query.get("port")
        port = int(port_text) if port_text and port_text.isdigit() else None
        if pod not in agent.compiler.pods:
            return web.json_response({"error": f"unknown pod {pod}"}, status=404)
        if pod not in agent.compiler.local_endpoints():
            node = agent.compiler.pods[pod].node
            return web.json_response(
                {"error": f"{pod} runs on {node or 'no node yet'}: ask that node's agent"},
                status=404,
            )
        rules = agent.compiler.compile(pod)
        addresses = sorted(agent.store.ips(to_fqdn(fqdn)))
        result = explain(
            rules,
            fqdn,
            port,
            protocol=request.query.get("protocol", "TCP").upper(),
        )
        body = result.to_dict() | {"pod": pod, "known_addresses": addresses}
        return web.json_response(body)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(agent.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/fqdn/cache", cache)
    app.router.add_get("/v1/endpoints", endpoints)
    app.router.add_get("/v1/explain", explain_route)
    app.router.add_get("/metrics", metrics)
    return app


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str)
