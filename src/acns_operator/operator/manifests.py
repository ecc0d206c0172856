"""Pure builders of the API objects the operator owns besides status and Events.

The ValidatingWebhookConfiguration (one webhook per kind, so the namespace selector
applies to the namespaced kind only), the client config pointing at this operator
(a URL for local runs, a Service in a cluster) and the host names its serving
certificate must cover.
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from acns_operator.errors import ConfigurationError
from acns_operator.settings import OperatorSettings

GROUP = "cilium.io"
VERSION = "v2"


@dataclass(frozen=True)
class PolicyResource:
    """One of the two policy kinds the operator watches and admits."""

    kind: str
    plural: str
    namespaced: bool
    handler_id: str
    webhook_name: str

    @property
    def api_version(self) -> str:
        """``cilium.io/v2``."""
        return f"{GROUP}/{VERSION}"

    def path(self, name: str, namespace: str | None = None, subresource: str = "") -> str:
        """The API path of one object (or of its subresource)."""
        base = f"/apis/{GROUP}/{VERSION}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"a {self.kind} needs a namespace")
            base += f"/namespaces/{namespace}"
        path = f"{base}/{self.plural}/{name}"
        return f"{path}/{subresource}" if subresource else path


CNP = PolicyResource(
    kind="CiliumNetworkPolicy",
    plural="ciliumnetworkpolicies",
    namespaced=True,
    handler_id="validate-cnp",
    webhook_name="validate.ciliumnetworkpolicies.acns.io",
)
CCNP = PolicyResource(
    kind="CiliumClusterwideNetworkPolicy",
    plural="ciliumclusterwidenetworkpolicies",
    namespaced=False,
    handler_id="validate-ccnp",
    webhook_name="validate.ciliumclusterwidenetworkpolicies.acns.io",
)
RESOURCES: tuple[PolicyResource, ...] = (CNP, CCNP)
BY_KIND: dict[str, PolicyResource] = {r.kind: r for r in RESOURCES}


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def _url_host(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def webhook_base_url(settings: OperatorSettings) -> str | None:
    """The URL the API server calls, or None when a Service is registered instead."""
    if settings.webhook_url:
        return settings.webhook_url.rstrip("/")
    if settings.webhook_service_name:
        return None
    if _is_unspecified(settings.webhook_host):
        raise ConfigurationError(
            f"the webhook listens on {settings.webhook_host!r}, which the API server cannot "
            "call: set webhook_url, webhook_service_name, or a concrete webhook_host"
        )
    return f"https://{_url_host(settings.webhook_host)}:{settings.webhook_port}"


def certificate_hosts(settings: OperatorSettings) -> list[str]:
    """The names the serving certificate must be valid for, first one its CN."""
    hosts: list[str] = []
    url = webhook_base_url(settings)
    if url is not None:
        parsed = urllib.parse.urlsplit(url)
        if not parsed.hostname:
            raise ConfigurationError(f"the webhook URL {url!r} has no host")
        hosts.append(parsed.hostname)
    if settings.webhook_service_name:
        service, namespace = settings.webhook_service_name, settings.operator_namespace
        domain = settings.policy.cluster_domain
        hosts += [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.{domain}"]
        hosts += [service, f"{service}.{namespace}"]
    if not _is_unspecified(settings.webhook_host) and settings.webhook_host not in hosts:
        hosts.append(settings.webhook_host)
    return hosts


def build_client_config(
    settings: OperatorSettings, resource: PolicyResource, ca_bundle: bytes
) -> dict[str, Any]:
    """``clientConfig`` for one webhook: URL or Service, path per kind, and the CA."""
    path = f"/{resource.handler_id}"
    config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode("ascii")}
    url = webhook_base_url(settings)
    if url is not None:
        config["url"] = url + path
    else:
        config["service"] = {
            "name": settings.webhook_service_name,
            "namespace": settings.operator_namespace,
            "port": settings.webhook_service_port,
            "path": path,
        }
    return config


def build_validating_webhook_configuration(
    settings: OperatorSettings, ca_bundle: bytes
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration for create and update of both kinds."""
    webhooks: list[dict[str, Any]] = []
    for resource in RESOURCES:
        webhook: dict[str, Any] = {
            "name": resource.webhook_name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": build_client_config(settings, resource, ca_bundle),
            "failurePolicy": settings.failure_policy,
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": settings.webhook_timeout,
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [resource.plural],
                    "scope": "Namespaced" if resource.namespaced else "Cluster",
                }
            ],
        }
        if resource.namespaced and settings.namespaces:
            webhook["namespaceSelector"] = {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": sorted(settings.namespaces),
                    }
                ]
            }
        webhooks.append(webhook)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": settings.webhook_configuration_name,
            "labels": {"app.kubernetes.io/managed-by": "acns-operator"},
        },
        "webhooks": webhooks,
    }


def webhooks_differ(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when the stored configuration must be replaced by ``desired``.

    Only the fields we set are compared: the API server fills defaults
    (``namespaceSelector: {}``, ``objectSelector: {}``, ``reinvocationPolicy`` ...)
    that must not make every start-up rewrite the object.
    """
    stored = current.get("webhooks") or []
    wanted = desired.get("webhooks") or []
    if len(stored) != len(wanted):
        return True
    for have, want in zip(stored, wanted, strict=True):
        for key, value in want.items():
            if have.get(key) != value:
                return True
        if "namespaceSelector" not in want and have.get("namespaceSelector") not in (None, {}):
            return True
    labels = (current.get("metadata") or {}).get("labels") or {}
    return any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items())
