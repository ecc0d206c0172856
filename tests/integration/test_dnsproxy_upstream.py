"""The proxy against a scripted upstream: stray replies are ignored, timeouts stay silent.

The upstream here is a UDP socket in the test process on loopback that answers (or
not) as each test scripts it, like dnspython's test nameserver with an overridable
``handle``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import dnslib
import pytest

from acns_operator.dnsproxy import rules
from acns_operator.dnsproxy.testing import ProxyProcess, loopback_settings, query

pytestmark = [pytest.mark.slow]

Handler = Callable[[bytes], list[bytes]]


class ScriptedUpstream:
    """A loopback UDP 'DNS server' whose ``handle`` returns the datagrams to send back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.handle: Handler = lambda _: []
        self.received: list[bytes] = []
        self.peers: list[tuple[str, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, peer = await loop.sock_recvfrom(self.sock, 65535)
            self.received.append(data)
            self.peers.append(peer)
            for out in self.handle(data):
                await loop.sock_sendto(self.sock, out, peer)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self._task
        self.sock.close()


def answer(
    data: bytes, address: str, *, name: str | None = None, msg_id: int | None = None
) -> bytes:
    request = dnslib.DNSRecord.parse(data)
    reply = request.reply()
    if name is not None:
        reply.questions = [dnslib.DNSQuestion(name)]
    if msg_id is not None:
        reply.header.id = msg_id
    reply.add_answer(dnslib.RR(str(reply.q.qname), rdata=dnslib.A(address), ttl=60))
    packed: bytes = reply.pack()
    return packed


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture
async def proxy(scripted: ScriptedUpstream, tmp_path: Path) -> AsyncIterator[ProxyProcess]:
    snapshot = rules.SnapshotModel.model_validate(
        {"endpoints": [{"ips": ["127.0.0.1"], "rules": [{"match_patterns": ["*.example.test"]}]}]}
    )
    rules.save_snapshot(snapshot, tmp_path / "snapshot.json")
    process = ProxyProcess(
        tmp_path,
        loopback_settings(
            f"127.0.0.1:{scripted.port}", tmp_path / "snapshot.json", upstream_timeout="0.5"
        ),
    )
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


def server_of(process: ProxyProcess) -> tuple[str, int]:
    return "127.0.0.1", int(process.settings["port"])


async def test_replies_with_a_wrong_id_or_question_are_ignored_and_the_matching_one_passes(
    proxy: ProxyProcess, scripted: ScriptedUpstream
) -> None:
    def handle(data: bytes) -> list[bytes]:
        real_id = dnslib.DNSRecord.parse(data).header.id
        return [
            answer(data, "203.0.113.66", msg_id=(real_id + 1) % 65536),  # wrong ID
            answer(data, "203.0.113.77", name="other.example.test"),  # wrong question
            answer(data, "192.0.2.55"),  # the real answer
        ]

    scripted.handle = handle
    result = await query(server_of(proxy), "api.example.test")
    assert result.addresses == ["192.0.2.55"]
    assert proxy.metric("acns_dnsproxy_upstream_stray_replies_total") == 2


async def test_the_upstream_sees_a_random_id_and_source_port_not_the_clients(
    proxy: ProxyProcess, scripted: ScriptedUpstream
) -> None:
    scripted.handle = lambda data: [answer(data, "192.0.2.55")]
    ids = []
    for _ in range(8):
        record = dnslib.DNSRecord.question("api.example.test")
        record.header.id = 1234
        result = await query(server_of(proxy), packet=record.pack())
        assert result.record.header.id == 1234
        ids.append(dnslib.DNSRecord.parse(scripted.received[-1]).header.id)
    assert len(set(ids)) > 1
    # source ports the kernel chose from the ephemeral range, never the listener's
    port_range = await asyncio.to_thread(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text)
    low, high = map(int, port_range.split())
    ports = {port for _, port in scripted.peers}
    assert all(low <= port <= high for port in ports)
    assert proxy.address[1] not in ports


async def test_an_upstream_timeout_sends_no_reply_like_cilium_and_is_counted(
    proxy: ProxyProcess, scripted: ScriptedUpstream
) -> None:
    scripted.handle = lambda _: []
    result = await query(server_of(proxy), "api.example.test", wait=1.5)
    assert result.raw is None
    assert scripted.received
    deadline = asyncio.get_running_loop().time() + 5
    while (
        proxy.metric(
            "cilium_proxy_upstream_reply_seconds_count", error="timeout", scope="totalTime"
        )
        < 1
    ):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    # the proxy is fine afterwards
    scripted.handle = lambda data: [answer(data, "192.0.2.56")]
    assert (await query(server_of(proxy), "api.example.test")).addresses == ["192.0.2.56"]
