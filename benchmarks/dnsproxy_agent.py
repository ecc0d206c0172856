"""What holding replies for the agent costs, and what not re-pushing known mappings saves.

A proxy in agent mode (a fake FQDNData agent on a unix socket that acks at once) in
front of a loopback dnsmasq; one client asks the same few allowed names over and over,
one query at a time, as an application re-resolving its dependencies does. Three runs:

1. ``standalone`` - no agent: the reply never waits.
2. ``agent_dedup`` - the default: an answer whose addresses the agent already has,
   with no later expiry, is not pushed again, so the reply is not held.
3. ``agent_every_answer`` - ``mapping_dedup_entries=0``: every answer is pushed and
   its reply held until the agent's ack (what Cilium's SDP does).

Figures: median and 99th-percentile round trip seen by the client, and how many
mappings reached the agent.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from acns_operator.dnsproxy import rules
from acns_operator.dnsproxy.testing import (
    LoopbackDnsmasq,
    ProxyProcess,
    loopback_settings,
    query,
)
from acns_operator.local.dnsserver import DnsRecord, DnsZone
from acns_operator.local.fake_agent import FakeAgent
from benchmarks.record import Record, make_record
from benchmarks.timing import percentile

__all__ = ["run"]

COMMAND = "make bench   # or: .venv/bin/python -m benchmarks dnsproxy_agent"
NAMES = [f"svc{i}.example.test" for i in range(10)]


def _snapshot() -> rules.SnapshotModel:
    return rules.SnapshotModel.model_validate(
        {
            "request_id": "bench",
            "endpoints": [
                {"ips": ["127.0.0.1"], "rules": [{"match_patterns": ["*.example.test"]}]}
            ],
        }
    )


async def _measure(
    work: Path, upstream: LoopbackDnsmasq, mode: str, queries: int
) -> tuple[list[float], int]:
    agent: FakeAgent | None = None
    settings = loopback_settings(upstream.address, work / mode / "snapshot.json")
    if mode == "standalone":
        rules.save_snapshot(_snapshot(), work / mode / "snapshot.json")
    else:
        agent = FakeAgent(rules.to_policy_state(_snapshot()))
        await agent.start(f"unix://{work / mode}.sock")
        settings["agent_address"] = f"unix://{work / mode}.sock"
        if mode == "agent_every_answer":
            settings["mapping_dedup_entries"] = "0"
    proxy = ProxyProcess(work / mode, settings)
    await asyncio.to_thread(proxy.start)
    try:
        if agent is not None:
            await agent.wait_for_ack("bench")
        server = ("127.0.0.1", int(settings["port"]))
        for name in NAMES:  # warm-up, and the first push of each name
            await query(server, name)
        times: list[float] = []
        for index in range(queries):
            answer = await query(server, NAMES[index % len(NAMES)])
            if answer.raw is None:
                raise RuntimeError(f"no answer through the proxy ({mode})")
            times.append(answer.received_at - answer.sent_at)
        return times, len(agent.mappings) if agent is not None else 0
    finally:
        await asyncio.to_thread(proxy.stop)
        if agent is not None:
            await agent.stop()


def run(*, quick: bool = False) -> Record:
    """Measure the three modes (see the module doc)."""
    queries = 200 if quick else 3000
    zone = DnsZone(
        records=tuple(
            DnsRecord(name, "A", f"192.0.2.{i + 1}", ttl=300) for i, name in enumerate(NAMES)
        )
    )
    figures: dict[str, float] = {"queries_count": queries}
    with tempfile.TemporaryDirectory(prefix="acns-bench-dnsproxy-agent-") as tmp:
        work = Path(tmp)
        upstream = LoopbackDnsmasq(zone, work / "dnsmasq")
        upstream.start()
        try:
            for mode in ("standalone", "agent_dedup", "agent_every_answer"):
                (work / mode).mkdir()
                times, pushed = asyncio.run(_measure(work, upstream, mode, queries))
                figures[f"{mode}_median_us"] = percentile(times, 0.5) * 1e6
                figures[f"{mode}_p99_us"] = percentile(times, 0.99) * 1e6
                figures[f"{mode}_mappings_pushed_count"] = pushed
        finally:
            upstream.stop()
    figures = {key: round(value, 1) for key, value in figures.items()}
    notes = (
        f"One client, {queries} sequential queries cycling over {len(NAMES)} allowed names "
        "(TTL 300 s) on loopback; the fake agent acks immediately, so 'agent_every_answer' "
        "shows the bare cost of one UpdateMapping round trip per answer, which de-duplication "
        "avoids once the agent has the mapping. Warm-up queries (one per name) not counted."
    )
    return make_record("dnsproxy_agent", figures, command=COMMAND, notes=notes)
