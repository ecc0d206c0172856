"""Which pods a Cilium label selector selects, with Cilium's label model (pure).

A pod's Cilium labels are its Kubernetes labels plus the labels Cilium derives, all
with source ``k8s``:

* ``io.kubernetes.pod.namespace=<namespace>``;
* ``io.cilium.k8s.namespace.labels.<key>=<value>`` for each label of its namespace.

A selector key may carry a source prefix (``k8s:app``, ``any:app``); an unprefixed key
means ``any``, and both ``any`` and ``k8s`` select pod labels. Keys with other sources
(``reserved:``, ``cidr:``, ``fqdn:`` ...) never select a pod.

In a namespaced policy (CiliumNetworkPolicy) the ``endpointSelector`` only selects pods
of the policy's namespace, and a ``toEndpoints`` selector gets the implicit label
``io.kubernetes.pod.namespace=<policy namespace>`` unless it names the namespace label
itself (Cilium's ``k8s.ParseNetworkPolicy`` behaviour).

:class:`PodIndex` answers "which pods does this selector select" from a label index,
so resolving a selector costs the size of the smallest matching label set, not the
number of pods in the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from acns_operator.api.selectors import EndpointSelector, split_label_key

NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
POD_SOURCES = frozenset({"any", "k8s"})


@dataclass(frozen=True, slots=True)
class Requirement:
    """One normalised requirement: a key (source stripped), an operator, values."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy the requirement."""
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present


@dataclass(frozen=True, slots=True)
class Selector:
    """A normalised selector; ``never`` when it names labels no pod can have."""

    requirements: tuple[Requirement, ...] = ()
    never: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a pod with Cilium labels ``labels`` is selected."""
        return not self.never and all(r.matches(labels) for r in self.requirements)

    def names_namespace(self) -> bool:
        """Whether the selector constrains the namespace label itself."""
        return any(r.key == NAMESPACE_LABEL for r in self.requirements)

    def with_namespace(self, namespace: str) -> Selector:
        """The selector restricted to one namespace."""
        extra = Requirement(NAMESPACE_LABEL, "In", frozenset({namespace}))
        return Selector((*self.requirements, extra), self.never)

    def __str__(self) -> str:
        if self.never:
            return "<nothing>"
        parts = []
        for r in self.requirements:
            if r.operator == "In" and len(r.values) == 1:
                parts.append(f"{r.key}={next(iter(r.values))}")
            elif r.operator in ("In", "NotIn"):
                parts.append(f"{r.key} {r.operator.lower()} ({','.join(sorted(r.values))})")
            elif r.operator == "Exists":
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts) or "<all>"


def to_selector(selector: EndpointSelector) -> Selector:
    """Normalise an API selector (source prefixes read the Cilium way)."""
    requirements: list[Requirement] = []
    never = False
    for raw_key, value in sorted((selector.match_labels or {}).items()):
        source, key = split_label_key(raw_key)
        if source not in POD_SOURCES:
            never = True
            continue
        requirements.append(Requirement(key, "In", frozenset({value})))
    for expression in selector.match_expressions or []:
        source, key = split_label_key(expression.key or "")
        operator = expression.operator or "Exists"
        if source not in POD_SOURCES:
            # A requirement on a label pods never carry: only negative ones can hold.
            if operator in ("In", "Exists"):
                never = True
            continue
        requirements.append(Requirement(key, operator, frozenset(expression.values or [])))
    return Selector(tuple(requirements), never)


def subject_selector(selector: EndpointSelector, namespace: str | None) -> Selector:
    """An ``endpointSelector``: within the policy's namespace for a namespaced policy."""
    normalised = to_selector(selector)
    return normalised.with_namespace(namespace) if namespace is not None else normalised


def peer_selector(selector: EndpointSelector, namespace: str | None) -> Selector:
    """A ``toEndpoints`` selector with Cilium's implicit namespace label."""
    normalised = to_selector(selector)
    if namespace is not None and not normalised.names_namespace():
        return normalised.with_namespace(namespace)
    return normalised


def cilium_labels(
    pod_labels: Mapping[str, str], namespace: str, namespace_labels: Mapping[str, str]
) -> dict[str, str]:
    """The labels Cilium gives a pod: its own, its namespace, its namespace's labels."""
    labels = dict(pod_labels)
    labels[NAMESPACE_LABEL] = namespace
    for key, value in namespace_labels.items():
        labels[NAMESPACE_LABELS_PREFIX + key] = value
    return labels


@dataclass(slots=True)
class PodIndex:
    """Pods' Cilium labels, indexed by (key, value) and by key."""

    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # pod key -> labels
    _by_pair: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _by_key: dict[str, set[str]] = field(default_factory=dict)

    def put(self, pod: str, labels: Mapping[str, str]) -> None:
        """Add or replace a pod."""
        self.remove(pod)
        stored = dict(labels)
        self.labels[pod] = stored
        for key, value in stored.items():
            self._by_pair.setdefault((key, value), set()).add(pod)
            self._by_key.setdefault(key, set()).add(pod)

    def remove(self, pod: str) -> None:
        """Forget a pod."""
        old = self.labels.pop(pod, None)
        if old is None:
            return
        for key, value in old.items():
            pair = self._by_pair.get((key, value))
            if pair is not None:
                pair.discard(pod)
                if not pair:
                    del self._by_pair[(key, value)]
            keyed = self._by_key.get(key)
            if keyed is not None:
                keyed.discard(pod)
                if not keyed:
                    del self._by_key[key]

    def select(self, selector: Selector) -> Iterator[str]:
        """The pods ``selector`` selects (in no particular order)."""
        if selector.never:
            return iter(())
        candidates: set[str] | None = None
        empty: set[str] = set()
        for requirement in selector.requirements:
            found: set[str] | None = None
            if requirement.operator == "In":
                if len(requirement.values) == 1:
                    # The index's own set, not a copy: this runs for every policy load.
                    value = next(iter(requirement.values))
                    found = self._by_pair.get((requirement.key, value), empty)
                else:
                    found = set()
                    for value in requirement.values:
                        found |= self._by_pair.get((requirement.key, value), empty)
            elif requirement.operator == "Exists":
                found = self._by_key.get(requirement.key, empty)
            if found is not None and (candidates is None or len(found) < len(candidates)):
                candidates = found
        pool: Iterable[str] = self.labels if candidates is None else candidates
        labels = self.labels
        return iter([pod for pod in pool if selector.matches(labels[pod])])
