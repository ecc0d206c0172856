"""The HTTPS admission endpoint and its registration with the API server.

:class:`AdmissionServer` implements kopf's admission-server protocol (``await
server(fn)`` yields client configs): it listens with the TLS context the
:class:`~acns_operator.operator.tls.TlsKeeper` keeps fresh, hands every
AdmissionReview to kopf's ``fn`` (which runs our ``@kopf.on.validate`` handlers) and
measures each answer. We register the ValidatingWebhookConfiguration ourselves
(:func:`ensure_registered`) rather than with kopf's ``managed`` mode, because kopf
removes its webhooks when one replica exits and cannot register a Service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import kopf

from acns_operator.operator.kube import KubeApi, KubeApiError
from acns_operator.operator.manifests import webhooks_differ
from acns_operator.operator.metrics import OperatorMetrics
from acns_operator.operator.tls import TlsKeeper

logger = logging.getLogger(__name__)

VWC_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


def classify_response(response: Mapping[str, Any]) -> str:
    """The verdict label of an AdmissionReview answer: admitted, warned or denied."""
    payload = response.get("response") or {}
    if not payload.get("allowed"):
        return "denied"
    return "warned" if payload.get("warnings") else "admitted"


class AdmissionServer:
    """Serves AdmissionReviews over HTTPS at ``/<handler-id>``; kopf's server protocol."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: TlsKeeper,
        metrics: OperatorMetrics,
        client_config: kopf.WebhookClientConfig,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._metrics = metrics
        self._client_config = client_config
        self.serving = asyncio.Event()

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        """Listen until cancelled; yield the client config once (kopf's protocol)."""

        async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return await self._serve(fn, request)

        app = aiohttp.web.Application()
        app.router.add_post("/{id:.*}", serve)
        runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            context = self._tls.context
            if context is None:
                context = await self._tls.start()
            site = aiohttp.web.TCPSite(
                runner, self._host, self._port, ssl_context=context, reuse_address=True
            )
            await site.start()
            logger.info("admission webhook listening on https://%s:%d", self._host, self._port)
            self.serving.set()
            yield self._client_config
            await asyncio.Event().wait()
        finally:
            self.serving.clear()
            await runner.cleanup()

    async def _serve(
        self, fn: kopf.WebhookFn, request: aiohttp.web.Request
    ) -> aiohttp.web.Response:
        started = time.perf_counter()
        webhook = request.match_info.get("id") or None
        kind = "unknown"
        operation = "unknown"
        try:
            review = json.loads(await request.text())
            payload = review.get("request") or {}
            kind = str((payload.get("kind") or {}).get("kind") or kind)
            operation = str(payload.get("operation") or operation)
            response = await fn(review, webhook=webhook, headers=dict(request.headers))
        except (json.JSONDecodeError, AttributeError) as exc:
            self._metrics.admission_requests.labels(kind, operation, "error").inc()
            raise aiohttp.web.HTTPBadRequest(reason=f"not an AdmissionReview: {exc}") from exc
        except Exception as exc:
            # kopf's WebhookError family (unknown resource, missing data) and anything
            # else: the API server applies failurePolicy, which is what we want.
            self._metrics.admission_requests.labels(kind, operation, "error").inc()
            logger.warning("admission request failed: %r", exc)
            raise aiohttp.web.HTTPInternalServerError(reason=type(exc).__name__) from exc
        verdict = classify_response(response)
        self._metrics.admission_requests.labels(kind, operation, verdict).inc()
        self._metrics.admission_duration.labels(kind).observe(time.perf_counter() - started)
        return aiohttp.web.json_response(response)


async def ensure_registered(client: KubeApi, desired: Mapping[str, Any]) -> bool:
    """Create or update the ValidatingWebhookConfiguration; True when it was written.

    Every replica calls this with the same desired object (same settings, same CA
    from the shared Secret), so concurrent calls converge instead of fighting.
    """
    name = desired["metadata"]["name"]
    for _ in range(5):
        try:
            current = await client.get(f"{VWC_PATH}/{name}")
        except KubeApiError as exc:
            if not exc.not_found:
                raise
            try:
                await client.create(VWC_PATH, desired)
            except KubeApiError as create_exc:
                if create_exc.conflict:
                    continue  # another replica created it: compare with theirs
                raise
            logger.info("registered the validating webhook %s", name)
            return True
        if not webhooks_differ(current, desired):
            return False
        body = {
            **desired,
            "metadata": {
                **desired["metadata"],
                "resourceVersion": current["metadata"]["resourceVersion"],
            },
        }
        try:
            await client.replace(f"{VWC_PATH}/{name}", body)
        except KubeApiError as exc:
            if exc.conflict:
                continue
            raise
        logger.info("updated the validating webhook %s", name)
        return True
    return False


async def unregister(client: KubeApi, name: str) -> None:
    """Delete the ValidatingWebhookConfiguration (absent is fine)."""
    try:
        await client.delete(f"{VWC_PATH}/{name}")
    except KubeApiError as exc:
        if not exc.not_found:
            raise
    logger.info("unregistered the validating webhook %s", name)
