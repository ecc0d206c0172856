"""The status writer: every policy's ``Valid`` condition and Warning Event.

Level-triggered, like a controller-runtime reconciler. kopf's watch events (the
initial listing included) feed :meth:`Reconciler.observe`, which judges the object
and keeps the latest body in the :class:`PolicyStore` on every replica (so metrics
and a fast take-over work everywhere); only the leader drains the queue and writes.
Each reconcile compares the stored condition with the one the judgement implies and
writes only the difference, so a restarted operator re-validates every object once
and writes nothing when nothing changed; Events are derived from the stored
condition too, so they are never repeated.

Writes go through the status subresource with the resourceVersion the decision was
based on: if the object changed meanwhile, the API server answers 409, and the newer
version (which the watch delivers) is reconciled instead of the stale one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from acns_operator.errors import AcnsError
from acns_operator.operator.clock import Clock, utcnow
from acns_operator.operator.judgement import Judge, Judgement, VerdictName, kind_of
from acns_operator.operator.kube import KubeApi, KubeApiError
from acns_operator.operator.manifests import BY_KIND
from acns_operator.operator.metrics import OperatorMetrics
from acns_operator.operator.status import (
    ObjectRef,
    build_event,
    derive_conditions,
    derive_event_name,
    find_condition,
    should_post_event,
    to_event_message,
)

logger = logging.getLogger(__name__)

# Kubernetes files Events about cluster-scoped objects in "default" (client-go's recorder).
CLUSTER_EVENT_NAMESPACE = "default"


@dataclass(frozen=True, order=True)
class PolicyKey:
    """Identifies one policy object."""

    kind: str
    namespace: str
    name: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PolicyKey:
        """The key of a raw API object."""
        meta = body.get("metadata") or {}
        return cls(kind_of(body), str(meta.get("namespace") or ""), str(meta.get("name") or ""))


@dataclass
class Observed:
    """The latest version of a policy the watch delivered, and its judgement."""

    body: Mapping[str, Any]
    judgement: Judgement


class PolicyStore:
    """The operator's view of every policy, keyed by kind, namespace and name."""

    def __init__(self) -> None:
        self._items: dict[PolicyKey, Observed] = {}

    def put(self, key: PolicyKey, observed: Observed) -> None:
        """Remember the latest version."""
        self._items[key] = observed

    def get(self, key: PolicyKey) -> Observed | None:
        """The latest version, if the policy still exists."""
        return self._items.get(key)

    def remove(self, key: PolicyKey) -> None:
        """Forget a deleted policy."""
        self._items.pop(key, None)

    def known(self) -> list[PolicyKey]:
        """Every known policy."""
        return list(self._items)

    def verdicts(self) -> Iterator[tuple[str, str, VerdictName]]:
        """(kind, namespace, verdict) per policy, for the metrics gauge."""
        for key, observed in list(self._items.items()):
            yield key.kind, key.namespace, observed.judgement.verdict

    def __len__(self) -> int:
        return len(self._items)


class Reconciler:
    """Keeps every policy's status and Events in line with its judgement."""

    def __init__(
        self,
        *,
        client: KubeApi,
        judge: Judge,
        metrics: OperatorMetrics,
        component: str,
        instance: str,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        clock: Clock = utcnow,
    ) -> None:
        self.store = PolicyStore()
        self._client = client
        self._judge = judge
        self._metrics = metrics
        self._component = component
        self._instance = instance
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._clock = clock
        self._leading = False
        self._queue: asyncio.Queue[PolicyKey] = asyncio.Queue()
        self._queued: set[PolicyKey] = set()
        self._failures: dict[PolicyKey, int] = {}
        self._retries: dict[PolicyKey, asyncio.TimerHandle] = {}
        metrics.watch_policies(self.store.verdicts)

    @property
    def leading(self) -> bool:
        """Whether this replica writes status now."""
        return self._leading

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing waiting for a retry."""
        return not self._queued and not self._retries

    def observe(self, body: Mapping[str, Any]) -> Judgement:
        """A policy was listed, added or modified: judge it and queue its reconcile."""
        key = PolicyKey.from_body(body)
        judgement = self._judge(body)
        self.store.put(key, Observed(body=body, judgement=judgement))
        if self._leading:
            self._enqueue(key)
        return judgement

    def forget(self, body: Mapping[str, Any]) -> None:
        """A policy was deleted: nothing is left to write."""
        key = PolicyKey.from_body(body)
        self.store.remove(key)
        self._failures.pop(key, None)
        handle = self._retries.pop(key, None)
        if handle is not None:
            handle.cancel()

    def lead(self) -> None:
        """Became the leader: reconcile everything known, since the last leader may
        have stopped half-way."""
        if self._leading:
            return
        self._leading = True
        self._metrics.leader.set(1)
        for key in self.store.known():
            self._enqueue(key)

    def follow(self) -> None:
        """Lost (or gave up) leadership: stop writing at once."""
        self._leading = False
        self._metrics.leader.set(0)
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        self._failures.clear()

    def _enqueue(self, key: PolicyKey) -> None:
        self._retries.pop(key, None)
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
            self._metrics.reconcile_queue.set(len(self._queued))

    def _retry_later(self, key: PolicyKey) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self._backoff * 2 ** (failures - 1), self._backoff_max)
        loop = asyncio.get_running_loop()
        previous = self._retries.pop(key, None)
        if previous is not None:
            previous.cancel()
        self._retries[key] = loop.call_later(delay, self._enqueue, key)

    async def run(self) -> None:
        """Drain the queue forever (while leading); failures are retried with backoff."""
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._metrics.reconcile_queue.set(len(self._queued))
            if not self._leading:
                continue
            try:
                await self.reconcile(key)
            except KubeApiError as exc:
                if exc.not_found:
                    continue  # deleted meanwhile; the watch says so too
                if exc.conflict:
                    # Changed since we looked: the watch brings the newer version, which
                    # is queued then. Retry soon in case it already came and went.
                    self._retry_later(key)
                    continue
                self._metrics.reconcile_errors.labels(key.kind, f"http-{exc.status}").inc()
                logger.warning("status of %s not written: %s", key, exc)
                self._retry_later(key)
            except AcnsError as exc:
                self._metrics.reconcile_errors.labels(key.kind, type(exc).__name__).inc()
                logger.warning("status of %s not written: %s", key, exc)
                self._retry_later(key)
            except Exception:
                # A bug must not stop the writer for every other policy.
                self._metrics.reconcile_errors.labels(key.kind, "internal").inc()
                logger.exception("reconciling %s failed", key)
                self._retry_later(key)
            else:
                self._failures.pop(key, None)

    async def reconcile(self, key: PolicyKey) -> None:
        """Write the policy's condition (and Event) if they differ from what is stored."""
        observed = self.store.get(key)
        resource = BY_KIND.get(key.kind)
        if observed is None or resource is None:
            return
        body = observed.body
        status = body.get("status")
        conditions = derive_conditions(status, observed.judgement, self._clock())
        if conditions is None:
            return
        current = find_condition(status)
        desired = find_condition({"conditions": conditions})
        assert desired is not None  # derive_conditions always includes Valid
        meta = body.get("metadata") or {}
        if should_post_event(current, desired):
            await self._post_event(body, observed.judgement)
        patch = {
            "metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": {"conditions": conditions},
        }
        path = resource.path(key.name, key.namespace or None, subresource="status")
        written = await self._client.merge_patch(path, patch)
        self._metrics.status_writes.labels(key.kind).inc()
        logger.info("%s %s/%s: Valid=%s", key.kind, key.namespace, key.name, desired.get("status"))
        # Remember what we wrote, unless a newer version arrived while we waited, so
        # a reconcile queued before the watch echoes our write does not write again.
        latest = self.store.get(key)
        if latest is not None and latest.body is body:
            self.store.put(key, Observed(body=written, judgement=observed.judgement))

    async def _post_event(self, body: Mapping[str, Any], judgement: Judgement) -> None:
        ref = ObjectRef.from_body(body)
        message = to_event_message(judgement)
        generation = (body.get("metadata") or {}).get("generation")
        namespace = ref.namespace or CLUSTER_EVENT_NAMESPACE
        event = build_event(
            ref,
            message=message,
            name=derive_event_name(ref, generation, message),
            event_namespace=namespace,
            component=self._component,
            instance=self._instance,
            now=self._clock(),
        )
        try:
            await self._client.create(f"/api/v1/namespaces/{namespace}/events", event)
        except KubeApiError as exc:
            if not exc.conflict:
                raise
            return  # posted by an earlier attempt whose status write failed
        self._metrics.events_posted.labels(ref.kind).inc()
