"""ICMP (IPv4) types as Cilium reads them: a number 0-255 or a CamelCase name. Pure.

Cilium translates names with its IPv4 table (``icmpIpv4TypeNameToCode``); the CRD's
pattern also admits IPv6-only names (``PacketTooBig`` ...) and upstream's misspelt
``"ExtendedEcho Reply"``, which have no IPv4 code: those stay unenforced (and warned).
"""

from __future__ import annotations

from acns_operator.api.rules import ICMPField

__all__ = ["ICMPV4_TYPES", "icmpv4_type"]

ICMPV4_TYPES: dict[str, int] = {
    "EchoReply": 0,
    "DestinationUnreachable": 3,
    "Redirect": 5,
    "Echo": 8,
    "EchoRequest": 8,
    "RouterAdvertisement": 9,
    "RouterSelection": 10,
    "TimeExceeded": 11,
    "ParameterProblem": 12,
    "Timestamp": 13,
    "TimestampReply": 14,
    "Photuris": 40,
    "ExtendedEchoRequest": 42,
    "ExtendedEchoReply": 43,
}
"""Cilium's IPv4 ICMP type names and their codes."""


def icmpv4_type(field: ICMPField) -> int | None:
    """The IPv4 ICMP type of ``field``; None for IPv6 or a type with no IPv4 code."""
    if field.family == "IPv6":
        return None
    value = field.type
    if isinstance(value, int):
        return value if 0 <= value <= 255 else None
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        number = int(text)
        return number if number <= 255 else None
    return ICMPV4_TYPES.get(text)
