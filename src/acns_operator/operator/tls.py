"""The webhook's serving certificate at run time: one Secret, every replica, renewals.

In ``generate`` mode the first replica to start creates the CA and certificate and
stores them in the Secret; the others read it, so all serve a certificate the single
registered ``caBundle`` trusts. Every replica re-reads the Secret periodically,
renews what :func:`~acns_operator.operator.certs.renew` says is due (writes are
conditional on the resourceVersion, so two replicas never both rotate), and reloads
its TLS context when the material changed. In ``secret`` mode the Secret belongs to
someone else (cert-manager) and is only read.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from acns_operator.errors import ConfigurationError, UpstreamError
from acns_operator.operator.certs import TlsMaterial, renew
from acns_operator.operator.clock import Clock, utcnow
from acns_operator.operator.kube import KubeApi, KubeApiError
from acns_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

CaListener = Callable[[bytes], Awaitable[None]]
WRITE_ATTEMPTS = 5


def _decode(secret: dict[str, Any]) -> dict[str, bytes]:
    data = secret.get("data") or {}
    return {key: base64.b64decode(value) for key, value in data.items() if value}


def _encode(data: dict[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode("ascii") for key, value in data.items()}


def load_server_context(
    material: TlsMaterial, context: ssl.SSLContext | None = None
) -> ssl.SSLContext:
    """A server TLS context with the material's certificate (or reload it into ``context``).

    Reloading into the same context makes new handshakes use the new certificate
    without restarting the listener; connections already open keep theirs.
    """
    if context is None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: a private temporary directory, gone right after.
    with tempfile.TemporaryDirectory(prefix="acns-webhook-") as folder:
        cert_path, key_path = Path(folder, "tls.crt"), Path(folder, "tls.key")
        cert_path.write_bytes(material.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(material.key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


class TlsKeeper:
    """Loads, renews and reloads the webhook's TLS material from its Secret."""

    def __init__(
        self,
        *,
        client: KubeApi,
        settings: OperatorSettings,
        hosts: Sequence[str],
        clock: Clock = utcnow,
    ) -> None:
        self._client = client
        self._settings = settings
        self._hosts = list(hosts)
        self._clock = clock
        namespace, name = settings.operator_namespace, settings.tls_secret_name
        self._collection = f"/api/v1/namespaces/{namespace}/secrets"
        self._path = f"{self._collection}/{name}"
        self._listeners: list[CaListener] = []
        self.material: TlsMaterial | None = None
        self.context: ssl.SSLContext | None = None

    def on_ca_change(self, listener: CaListener) -> None:
        """Call ``listener(ca_bundle)`` whenever the CA bundle changes after start-up."""
        self._listeners.append(listener)

    @property
    def ca_bundle(self) -> bytes:
        """The CA bundle to register; only valid after :meth:`start`."""
        if self.material is None:
            raise ConfigurationError("the webhook TLS material is not loaded yet")
        return self.material.ca_bundle_pem

    async def _read(self) -> tuple[dict[str, Any] | None, TlsMaterial | None]:
        try:
            secret = await self._client.get(self._path)
        except KubeApiError as exc:
            if exc.not_found:
                return None, None
            if exc.forbidden:
                raise ConfigurationError(
                    f"not allowed to read the Secret {self._path}: {exc.api_message}"
                ) from exc
            raise
        data = _decode(secret)
        try:
            return secret, TlsMaterial.from_secret_data(data)
        except ConfigurationError:
            if self._settings.tls_source == "secret":
                raise
            logger.warning("the TLS Secret %s is unusable; generating new material", self._path)
            return secret, None

    async def fetch(self) -> TlsMaterial:
        """The material to serve now, renewing (in ``generate`` mode) what is due."""
        settings = self._settings
        if settings.tls_source == "secret":
            _, material = await self._read()
            if material is None:
                raise ConfigurationError(
                    f"the TLS Secret {settings.operator_namespace}/{settings.tls_secret_name} "
                    "does not exist (tls_source=secret expects cert-manager or you to write it)"
                )
            return material
        for _ in range(WRITE_ATTEMPTS):
            secret, material = await self._read()
            renewed = renew(
                material,
                self._hosts,
                self._clock(),
                certificate_validity=timedelta(seconds=settings.tls_certificate_validity),
                ca_validity=timedelta(seconds=settings.tls_ca_validity),
                renew_before=timedelta(seconds=settings.tls_renew_before),
            )
            if renewed is None:
                assert material is not None  # renew() only keeps existing material
                return material
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": settings.tls_secret_name,
                    "namespace": settings.operator_namespace,
                    "labels": {"app.kubernetes.io/managed-by": "acns-operator"},
                },
                "data": _encode(renewed.to_secret_data()),
            }
            try:
                if secret is None:
                    await self._client.create(self._collection, body)
                else:
                    body["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
                    await self._client.replace(self._path, body)
            except KubeApiError as exc:
                if exc.conflict:
                    continue  # another replica wrote first: use theirs
                if exc.forbidden or exc.not_found:
                    raise ConfigurationError(
                        f"cannot write the TLS Secret {self._path}: {exc.api_message}"
                    ) from exc
                raise
            logger.info("stored new webhook TLS material in %s", self._path)
            return renewed
        raise UpstreamError(f"the TLS Secret {self._path} kept changing under us")

    async def start(self) -> ssl.SSLContext:
        """Load the material and build the server context (call once before serving)."""
        self.material = await self.fetch()
        self.context = load_server_context(self.material)
        return self.context

    async def refresh(self) -> bool:
        """Re-read (and maybe renew); reload the context if the material changed."""
        material = await self.fetch()
        if material == self.material:
            return False
        previous_bundle = self.material.ca_bundle_pem if self.material is not None else None
        self.material = material
        self.context = load_server_context(material, self.context)
        logger.info("reloaded the webhook serving certificate")
        if material.ca_bundle_pem != previous_bundle:
            for listener in self._listeners:
                await listener(material.ca_bundle_pem)
        return True

    async def run(self) -> None:
        """Refresh every ``tls_check_interval`` seconds, forever."""
        while True:
            await asyncio.sleep(self._settings.tls_check_interval)
            try:
                await self.refresh()
            except (UpstreamError, ConfigurationError) as exc:
                # Keep serving the current certificate; it is renewed well before expiry.
                logger.warning("webhook TLS refresh failed: %s", exc)
