"""DNS-name questions about selectors: cluster-domain names, coverage, probes.

Built on :mod:`acns_operator.fqdn` (Cilium's exact matching); nothing here matches
names by itself. A *probe* is a concrete name that stands for what a selector covers:
the name itself for a matchName, the pattern with each run of ``*`` replaced by a
label character (and a leading ``**.`` by one label) for a matchPattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from acns_operator.api.peers import FQDNSelector
from acns_operator.errors import PolicyError
from acns_operator.fqdn import matcher
from acns_operator.fqdn.names import to_fqdn
from acns_operator.fqdn.patterns import has_multilevel_prefix, is_match_all, sanitize_pattern

__all__ = [
    "any_selects",
    "cluster_domain",
    "cluster_probes",
    "is_under_domain",
    "probe",
    "selects_under_domain",
    "to_matcher",
]

_STARS = re.compile(r"[*]+")
_MULTILEVEL = re.compile(r"^[*]{2,}[.]")


def cluster_domain(domain: str) -> str:
    """The cluster domain as an FQDN: ``cluster.local`` -> ``cluster.local.``."""
    return to_fqdn(domain.strip(".")) if domain.strip(".") else "."


def is_under_domain(name: str, domain: str) -> bool:
    """Tell whether ``name`` is ``domain`` or a name below it (both FQDNs)."""
    fqdn = to_fqdn(name)
    return fqdn == domain or fqdn.endswith("." + domain)


def to_matcher(selector: FQDNSelector) -> matcher.FQDNSelector | None:
    """The :mod:`acns_operator.fqdn` selector for ``selector``; None when invalid."""
    try:
        if selector.match_name is not None and selector.match_pattern is None:
            return matcher.FQDNSelector(match_name=selector.match_name)
        if selector.match_pattern is not None and selector.match_name is None:
            return matcher.FQDNSelector(match_pattern=selector.match_pattern)
    except PolicyError:
        return None
    return None


def probe(selector: FQDNSelector) -> str | None:
    """A concrete name ``selector`` selects, standing for all it selects.

    None for invalid and match-all selectors, which stand for nothing in particular.
    """
    if to_matcher(selector) is None:
        return None
    if selector.match_name is not None:
        return to_fqdn(selector.match_name)
    pattern = selector.match_pattern or ""
    if is_match_all(pattern):
        return None
    text = sanitize_pattern(pattern)
    if has_multilevel_prefix(text):
        text = _MULTILEVEL.sub("x.", text)
    return _STARS.sub("x", text)


def selects_under_domain(selector: FQDNSelector, domain: str) -> bool:
    """Tell whether every name ``selector`` selects lies in ``domain`` (by its literal tail).

    ``*.svc.cluster.local`` and ``api.default.svc.cluster.local`` are; ``*.local`` and
    ``**.example.com`` are not.
    """
    if to_matcher(selector) is None:
        return False
    if selector.match_name is not None:
        return is_under_domain(selector.match_name, domain)
    pattern = selector.match_pattern or ""
    if is_match_all(pattern):
        return False
    text = sanitize_pattern(pattern)
    return text == domain or text.endswith("." + domain)


def cluster_probes(domain: str) -> list[str]:
    """Names pods typically look up in the cluster (services, search-domain forms)."""
    return [
        f"kubernetes.default.svc.{domain}",
        f"x.x.svc.{domain}",
        f"x.svc.{domain}",
        f"x.{domain}",
    ]


def any_selects(selectors: Iterable[FQDNSelector], name: str) -> bool:
    """Tell whether any valid selector in ``selectors`` selects ``name``."""
    for selector in selectors:
        compiled = to_matcher(selector)
        if compiled is not None and matcher.selector_matches(compiled, name):
            return True
    return False
