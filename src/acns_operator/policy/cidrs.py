"""CIDR values as the CRD and Cilium read them."""

from __future__ import annotations

import ipaddress

__all__ = ["IPNetwork", "cidr_error", "parse_cidr"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(text: str) -> IPNetwork | None:
    """Parse ``address/length``; None when it is not a prefix (a bare address is not).

    Host bits may be set (``10.0.0.1/24``), as both the CRD's ``cidr`` format and
    Cilium accept; the network is what counts.
    """
    if "/" not in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def cidr_error(text: str) -> str | None:
    """Say why ``text`` is not a valid CIDR, or return None when it is."""
    if parse_cidr(text) is not None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return f"{text!r} is not a CIDR: write a prefix such as 192.0.2.0/24"
    bits = 32 if address.version == 4 else 128
    return f"{text!r} is an address, not a CIDR: write {text}/{bits}"
