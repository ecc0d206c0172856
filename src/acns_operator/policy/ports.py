"""Port values as Cilium reads them: numbers, named ports, and which ones carry DNS."""

from __future__ import annotations

import re

__all__ = ["DNS_PORT", "DNS_PORT_NAMES", "is_dns_port", "parse_port", "port_error"]

DNS_PORT = 53
DNS_PORT_NAMES = frozenset({"dns", "dns-tcp", "domain"})
"""Named container ports that conventionally carry DNS (CoreDNS uses dns / dns-tcp)."""

# An IANA service name (RFC 6335 5.1): 1-15 letters, digits and '-', at least one
# letter, no '-' at either end or twice in a row. Cilium treats such a port as a name.
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,13}[a-zA-Z0-9])?")


def _is_service_name(text: str) -> bool:
    return (
        _SERVICE_NAME.fullmatch(text) is not None
        and any(char.isalpha() for char in text)
        and "--" not in text
    )


def parse_port(text: str) -> int | str | None:
    """Read a ``port`` value: a number, a lower-cased port name, or None when invalid.

    As Cilium's Go parser: a value that is a valid service name is a name (so ``0x35``
    is a name); otherwise it must be an unsigned number up to 65535 in Go's base-0
    notation, where a leading ``0`` means octal.
    """
    if _is_service_name(text):
        return text.lower()
    if not text.isascii() or not text.isdigit():
        return None
    try:
        value = int(text, 8) if len(text) > 1 and text.startswith("0") else int(text)
    except ValueError:
        return None
    return value if value <= 65535 else None


def port_error(text: str | None) -> str | None:
    """Say why ``text`` is not a valid port, or return None when it is."""
    if text is None or text == "":
        return 'port is required: give a number as a string (port: "443") or a named port'
    if parse_port(text) is None:
        return (
            f"port {text!r} is neither a number from 0 to 65535 nor a named port "
            "(1-15 letters, digits and '-', with at least one letter)"
        )
    return None


def is_dns_port(text: str | None) -> bool:
    """Tell whether ``text`` names the DNS port (53, or a port named like dns)."""
    if text is None:
        return False
    value = parse_port(text)
    return value == DNS_PORT or value in DNS_PORT_NAMES
