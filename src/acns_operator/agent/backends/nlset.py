"""Set-element updates straight over nf_tables netlink: the mapping fast path.

libnftables (1.0.6, Debian bookworm) loads its cache of the *whole ruleset* before
every command, including the rules and anonymous sets of every table - kube-proxy's
too on a real node. An ``add element`` of 20 addresses therefore costs 2-4 ms on a
small ruleset and grows with it. A DNS answer only ever adds (or removes) elements of
existing selector sets, so those updates are sent as raw ``NFT_MSG_NEWSETELEM`` /
``NFT_MSG_DELSETELEM`` messages inside one ``NFNL_MSG_BATCH_BEGIN``/``END`` batch: one
kernel transaction, all or nothing, exactly like the text batch, in tens of
microseconds. Everything structural (tables, chains, rules, sets) still goes through
libnftables.

The socket is created inside the node's namespace (sockets keep the namespace they
were made in), then used from any thread.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

from acns_operator.agent.backends.libnft import NftablesError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NFPROTO_INET = 1

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLMSG_ERROR = 0x2
NLA_F_NESTED = 0x8000

NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_TIMEOUT = 4
NFTA_DATA_VALUE = 1

# Elements per NEWSETELEM message: keeps each message far below the socket buffer.
CHUNK = 256


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _nest(kind: int, payload: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, payload)


def _message(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    header = struct.pack("=BBH", family, 0, socket.htons(res_id))
    length = 16 + len(header) + len(body)
    return struct.pack("=IHHII", length, kind, flags, seq, 0) + header + body


def _element(ip: str, timeout_ms: int | None) -> bytes:
    key = _nest(NFTA_SET_ELEM_KEY, _attr(NFTA_DATA_VALUE, ipaddress.IPv4Address(ip).packed))
    if timeout_ms is not None:
        key += _attr(NFTA_SET_ELEM_TIMEOUT, struct.pack(">Q", timeout_ms))
    return _nest(NFTA_LIST_ELEM, key)


def _elements_message(
    kind: int, flags: int, seq: int, table: str, set_name: str, elements: Sequence[bytes]
) -> bytes:
    body = _attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
    body += _attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
    body += _nest(NFTA_SET_ELEM_LIST_ELEMENTS, b"".join(elements))
    return _message((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, NFPROTO_INET, 0, body)


def build_batch(
    table: str,
    upserts: Mapping[str, Sequence[tuple[str, int]]],
    deletes: Mapping[str, Sequence[str]],
    seq_start: int,
) -> tuple[bytes, list[int]]:
    """One transaction: add/refresh ``upserts`` (ip, timeout ms), then remove ``deletes``.

    A removal is sent as add (1 s) + delete, so removing an element that already timed
    out cannot fail the whole batch. Returns the bytes and the sequence numbers that
    the kernel acknowledges.
    """
    seq = itertools.count(seq_start)
    parts = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, next(seq), 0, NFNL_SUBSYS_NFTABLES, b"")]
    acked: list[int] = []
    flags_add = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
    for set_name, items in upserts.items():
        for start in range(0, len(items), CHUNK):
            chunk = [_element(ip, ms) for ip, ms in items[start : start + CHUNK]]
            number = next(seq)
            parts.append(
                _elements_message(NFT_MSG_NEWSETELEM, flags_add, number, table, set_name, chunk)
            )
            acked.append(number)
    for set_name, ips in deletes.items():
        for start in range(0, len(ips), CHUNK):
            batch = ips[start : start + CHUNK]
            number = next(seq)
            parts.append(
                _elements_message(
                    NFT_MSG_NEWSETELEM, flags_add, number, table, set_name,
                    [_element(ip, 1000) for ip in batch],
                )
            )  # fmt: skip
            acked.append(number)
            number = next(seq)
            parts.append(
                _elements_message(
                    NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, number, table, set_name,
                    [_element(ip, None) for ip in batch],
                )
            )  # fmt: skip
            acked.append(number)
    parts.append(
        _message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, next(seq), 0, NFNL_SUBSYS_NFTABLES, b"")
    )
    return b"".join(parts), acked


class SetElementWriter:
    """Sends element batches on one netlink socket (see the module doc)."""

    def __init__(self, make_socket: Callable[[], socket.socket] | None = None) -> None:
        factory = make_socket or (
            lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        )
        self._sock = factory()
        self._sock.bind((0, 0))
        self._seq = int.from_bytes(os.urandom(3), "big")

    def apply(
        self,
        table: str,
        upserts: Mapping[str, Sequence[tuple[str, int]]],
        deletes: Mapping[str, Sequence[str]],
    ) -> None:
        """Apply one batch; raises :class:`NftablesError` when the kernel refuses it."""
        data, acked = build_batch(table, upserts, deletes, self._seq)
        self._seq += len(acked) + 2
        if not acked:
            return
        self._sock.sendall(data)
        pending = set(acked)
        failure: str | None = None
        while pending:
            chunk = self._sock.recv(65536)
            for seq, code in _parse_acks(chunk):
                pending.discard(seq)
                if code != 0 and failure is None:
                    failure = f"{errno.errorcode.get(-code, code)} ({os.strerror(-code)})"
            if failure is not None:
                # After an error the kernel aborts the batch; later messages get no ack.
                self._drain()
                raise NftablesError(f"the kernel refused a set-element batch: {failure}")

    def _drain(self) -> None:
        self._sock.setblocking(False)
        try:
            while True:
                self._sock.recv(65536)
        except BlockingIOError:
            pass
        finally:
            self._sock.setblocking(True)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def _parse_acks(data: bytes) -> Iterable[tuple[int, int]]:
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            return
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + 16)
            yield seq, code
        offset += (length + 3) & ~3
