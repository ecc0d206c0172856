"""The raw nf_tables netlink batch for set elements (parsed back, no kernel needed)."""

from __future__ import annotations

import socket
import struct

from acns_operator.agent.backends.nftables import element_batches, set_name
from acns_operator.agent.backends.nlset import (
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM,
    build_batch,
)
from acns_operator.agent.datapath import DatapathUpdate


def messages(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    offset = 0
    while offset < len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        out.append((kind, seq, data[offset + 16 : offset + length]))
        offset += (length + 3) & ~3
    return out


def test_a_batch_is_begin_elements_end_with_acks_for_each_element_message() -> None:
    data, acked = build_batch(
        "acns_agent", {"fqdn_a": [("192.0.2.10", 30_000)]}, {"fqdn_a": ["192.0.2.11"]}, 100
    )
    kinds = [(kind, seq) for kind, seq, _ in messages(data)]
    subsystem = 10 << 8
    assert kinds == [
        (NFNL_MSG_BATCH_BEGIN, 100),
        (subsystem | NFT_MSG_NEWSETELEM, 101),
        (subsystem | NFT_MSG_NEWSETELEM, 102),  # removal: add first ...
        (subsystem | NFT_MSG_DELSETELEM, 103),  # ... then delete, so it cannot fail
        (NFNL_MSG_BATCH_END, 104),
    ]
    assert acked == [101, 102, 103]


def test_an_element_message_carries_table_set_address_and_timeout() -> None:
    data, _ = build_batch("acns_agent", {"fqdn_a": [("192.0.2.10", 30_000)]}, {}, 1)
    _, _, payload = messages(data)[1]
    family = payload[0]
    assert family == 1  # NFPROTO_INET
    body = payload[4:]
    assert b"acns_agent\0" in body
    assert b"fqdn_a\0" in body
    assert socket.inet_aton("192.0.2.10") in body
    assert struct.pack(">Q", 30_000) in body


def test_an_update_becomes_per_set_batches_with_millisecond_timeouts() -> None:
    key = "name:payments.example.test."
    update = DatapathUpdate(
        elements=[(key, "192.0.2.10", 130.2)], removed_elements=[(key, "192.0.2.11")]
    )
    upserts, deletes = element_batches(update, 100.0)
    assert upserts == {set_name(key): [("192.0.2.10", 30_200)]}
    assert deletes == {set_name(key): ["192.0.2.11"]}
