"""Leader election on a ``coordination.k8s.io/v1`` Lease, the way client-go does it.

Only the leader writes status and Events; every replica serves the webhook. As in
client-go's ``leaderelection`` package, a Lease held by someone else counts as
expired when *we* have not seen it change for ``leaseDurationSeconds`` (local
monotonic time, so clock skew between nodes does not matter); writes carry the
resourceVersion read, so two candidates never both win; the leader steps down when it
could not renew for ``renew_deadline``; on a clean exit it releases the Lease (empty
holder, one-second duration) so the other replica takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from acns_operator.errors import UpstreamError
from acns_operator.operator.kube import KubeApi, KubeApiError

logger = logging.getLogger(__name__)

LeaseAction = Literal["acquire", "renew", "wait"]


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that election looks at."""

    holder: str
    renew_time: str
    duration: float
    transitions: int

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaseRecord:
        """Read a Lease spec, tolerating absent fields."""
        spec = spec or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            duration=float(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def to_micro_time(moment: datetime) -> str:
    """``metav1.MicroTime`` serialisation."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decide(
    record: LeaseRecord | None, identity: str, observed_at: float, now: float
) -> LeaseAction:
    """Take the Lease (free, expired, or ours already) or wait for it.

    ``observed_at`` is when we (monotonic clock) last saw ``record`` change.
    """
    if record is None or not record.holder:
        return "acquire"
    if record.holder == identity:
        return "renew"
    if observed_at + record.duration <= now:
        return "acquire"
    return "wait"


def build_lease_spec(
    record: LeaseRecord | None, identity: str, action: LeaseAction, duration: float, now: datetime
) -> dict[str, Any]:
    """The spec we write to acquire or renew."""
    stamp = to_micro_time(now)
    transitions = record.transitions if record is not None else 0
    spec: dict[str, Any] = {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(duration)),
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }
    if action == "acquire":
        spec["acquireTime"] = stamp
        if record is not None and record.holder and record.holder != identity:
            spec["leaseTransitions"] = transitions + 1
    return spec


class LeaderElector:
    """Campaigns for one Lease and reports gaining and losing it."""

    def __init__(
        self,
        *,
        client: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._last_renewed = 0.0
        self.leading = False

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when we hold the Lease afterwards."""
        try:
            lease: dict[str, Any] | None = await self._client.get(self._path)
        except KubeApiError as exc:
            if not exc.not_found:
                raise
            lease = None
        record = LeaseRecord.from_spec(lease.get("spec")) if lease is not None else None
        now = self._monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        action = decide(record, self.identity, self._observed_at, now)
        if action == "wait":
            return False
        spec = build_lease_spec(record, self.identity, action, self._duration, self._wall_clock())
        try:
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self._name, "namespace": self._namespace},
                    "spec": spec,
                }
                written = await self._client.create(self._collection, body)
            else:
                written = await self._client.replace(self._path, {**lease, "spec": spec})
        except KubeApiError as exc:
            if exc.conflict:
                return False  # someone else wrote first; look again next round
            raise
        self._observed = LeaseRecord.from_spec(written.get("spec"))
        self._observed_at = self._monotonic()
        return True

    def _set_leading(self, leading: bool, *, released: bool = False) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if leading:
            logger.info("%s became the leader (Lease %s)", self.identity, self._name)
            self._on_started()
        else:
            level = logging.INFO if released else logging.WARNING
            logger.log(level, "%s is no longer the leader (Lease %s)", self.identity, self._name)
            self._on_stopped()

    async def run(self) -> None:
        """Campaign forever; call the callbacks on every change of leadership."""
        while True:
            try:
                held = await self.try_acquire_or_renew()
            except UpstreamError as exc:
                logger.warning("leader election round failed: %s", exc)
                held = None
            now = self._monotonic()
            if held:
                self._last_renewed = now
                self._set_leading(True)
            elif held is False:
                # Someone else holds it (or won the race): not us, whatever we thought.
                self._set_leading(False)
            elif self.leading and now - self._last_renewed >= self._renew_deadline:
                # Could not reach the API server: keep writing only until the deadline,
                # well before the Lease expires for the others.
                self._set_leading(False)
            await asyncio.sleep(self._retry_period)

    async def release(self) -> None:
        """Give the Lease up so another replica need not wait for it to expire."""
        if not self.leading:
            return
        self._set_leading(False, released=True)
        try:
            lease = await self._client.get(self._path)
            if LeaseRecord.from_spec(lease.get("spec")).holder != self.identity:
                return
            spec = dict(lease.get("spec") or {})
            spec.update(
                holderIdentity=None,
                leaseDurationSeconds=1,
                renewTime=to_micro_time(self._wall_clock()),
            )
            await self._client.replace(self._path, {**lease, "spec": spec})
        except UpstreamError as exc:
            logger.warning("could not release the Lease %s: %s", self._name, exc)
