"""DNS name normalisation: the one canonical form every match works on.

Cilium compares names lower-cased and fully qualified (dot-terminated). Both sides of a
match go through :func:`to_fqdn`: the selector's name or pattern, and the query name a
pod asks for.
"""

from __future__ import annotations

__all__ = ["is_fqdn", "to_fqdn", "to_lower"]

# U+0130 (capital I with dot above) is the one character whose Python full-case
# lower-casing ("i" + combining dot) differs from Go's simple mapping ("i"). Cilium
# lower-cases with Go's strings.ToLower, so we map it the Go way.
_GO_LOWER_EXCEPTIONS = str.maketrans({"\u0130": "i"})


def to_lower(text: str) -> str:
    """Lower-case ``text`` the way Go's ``strings.ToLower`` does."""
    if text.isascii():
        return text.lower()
    return text.translate(_GO_LOWER_EXCEPTIONS).lower()


def is_fqdn(name: str) -> bool:
    """Tell whether ``name`` ends in an unescaped dot (is fully qualified).

    A final dot preceded by an odd number of backslashes is escaped: it is part of
    the last label, not the root separator, so ``a\\.`` is not fully qualified.
    """
    if not name.endswith("."):
        return False
    body = name[:-1]
    backslashes = len(body) - len(body.rstrip("\\"))
    return backslashes % 2 == 0


def to_fqdn(name: str) -> str:
    """Return ``name`` lower-cased and dot-terminated, as Cilium's ``FQDN()`` does.

    A trailing dot is added unless the name already ends in an unescaped dot; the
    empty name becomes the root, ``"."``.
    """
    lowered = name.lower() if name.isascii() else to_lower(name)
    # On the query hot path: settle the usual cases without counting backslashes.
    if lowered[-1:] != ".":
        return lowered + "."
    if lowered[-2:-1] != "\\" or is_fqdn(lowered):
        return lowered
    return lowered + "."
