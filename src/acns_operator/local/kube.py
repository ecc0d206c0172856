"""Thin clients for a Kubernetes API server: kubectl, plain HTTPS, and object helpers.

Written for the local control plane (:mod:`acns_operator.local.controlplane`), the tests
and ``acns demo``, where there is no kubelet, no scheduler and no controllers: Pods are
only objects, so their IPs and phase are set through the status subresource here.

Two ways in, both authenticated with a client certificate:

- :class:`Kubectl` runs the real ``kubectl`` with a kubeconfig, for what users type
  (``apply -f``, admission warnings, error messages);
- :class:`ApiClient` speaks HTTPS with the standard library, for exact requests,
  status subresources and watches, without a Kubernetes client dependency.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import secrets
import ssl
import subprocess
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from acns_operator.errors import HarnessError

__all__ = [
    "ApiClient",
    "ApiError",
    "ApiResponse",
    "ClusterAccess",
    "CommandResult",
    "Kubectl",
    "WatchEvent",
    "create_namespace",
    "create_node",
    "create_pod",
    "create_service",
    "set_pod_status",
    "to_dns_label",
    "unique_name",
    "write_kubeconfig",
]

# Pods here are never run: an image under the reserved .invalid TLD makes that obvious
# and guarantees nothing could pull it if a kubelet ever appeared.
PLACEHOLDER_IMAGE = "registry.invalid/acns/not-run:0"

_DNS_LABEL_MAX = 63


@dataclass(frozen=True)
class ClusterAccess:
    """Everything needed to reach one API server as one identity.

    ``kubeconfig`` embeds the same certificates as the files, so it can be handed to
    kubectl, helm or kopf on its own.
    """

    server: str
    user: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    kubeconfig: Path


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    user: str,
    cluster_name: str = "acns-local",
) -> Path:
    """Write a self-contained kubeconfig (certificates embedded) and return its path."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file holds a private key: readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        yaml.safe_dump(config, stream, sort_keys=False)
    return path


# --- names --------------------------------------------------------------------------------


def to_dns_label(text: str, *, max_length: int = _DNS_LABEL_MAX) -> str:
    """Turn arbitrary text (a test name) into a valid DNS-1123 label prefix.

    Lower-cases, replaces runs of other characters with ``-``, trims to ``max_length``
    and strips leading/trailing dashes; returns ``"x"`` if nothing is left.
    """
    label = re.sub(r"[^a-z0-9]+", "-", text.lower())[:max_length].strip("-")
    return label or "x"


def unique_name(prefix: str) -> str:
    """A DNS-1123 label that starts with ``prefix`` and is unique for practical purposes.

    Eight hex digits of randomness: 4 billion names, so parallel test sessions and
    reruns against a long-lived control plane never collide.
    """
    suffix = secrets.token_hex(4)
    return f"{to_dns_label(prefix, max_length=_DNS_LABEL_MAX - len(suffix) - 1)}-{suffix}"


# --- kubectl ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """What a finished command returned."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.returncode == 0

    def check(self) -> CommandResult:
        """Return self, or raise :class:`HarnessError` showing the command and its output."""
        if not self.ok:
            raise HarnessError(
                f"{' '.join(self.args)} exited with status {self.returncode}\n"
                f"stderr:\n{self.stderr.strip()}\nstdout:\n{self.stdout.strip()}"
            )
        return self


class Kubectl:
    """Runs ``kubectl`` against one kubeconfig.

    The discovery cache goes to ``cache_dir`` (default: next to the kubeconfig) rather
    than ``~/.kube/cache``: each control plane is new, and sharing a home folder with
    other sessions would mix their caches.
    """

    def __init__(
        self,
        binary: Path,
        kubeconfig: Path,
        *,
        cache_dir: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Bind a kubectl binary to a kubeconfig; ``timeout`` bounds each call (seconds)."""
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir or kubeconfig.parent / "kubectl-cache"
        self.timeout = timeout

    def run(
        self, *args: str, stdin: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run ``kubectl <args>`` and return its result, whatever its exit status.

        Raises :class:`HarnessError` only when kubectl cannot be started or times out.
        """
        argv = (
            str(self.binary),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.cache_dir}",
            *args,
        )
        try:
            completed = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout or self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(
                f"{' '.join(argv)} did not finish in {exc.timeout} s\n"
                f"stderr so far:\n{_text(exc.stderr)}"
            ) from exc
        except OSError as exc:
            raise HarnessError(f"could not run {self.binary}: {exc}") from exc
        return CommandResult(argv, completed.returncode, completed.stdout, completed.stderr)

    def apply(
        self, manifest: str, *, namespace: str | None = None, check: bool = True
    ) -> CommandResult:
        """``kubectl apply -f -`` with YAML or JSON text.

        With ``check=False`` a rejected apply (e.g. denied by a webhook) is returned
        instead of raised, so tests can assert on kubectl's message.
        """
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["--namespace", namespace]
        result = self.run(*args, stdin=manifest)
        return result.check() if check else result

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        """``kubectl get <resource> <name> -o json``, parsed."""
        args = ["get", resource, name, "-o", "json"]
        if namespace:
            args += ["--namespace", namespace]
        parsed: dict[str, Any] = json.loads(self.run(*args).check().stdout)
        return parsed


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    return output.decode(errors="replace") if isinstance(output, bytes) else output


# --- HTTPS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiResponse:
    """A response from the API server: status code and body (parsed JSON, else text)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        """True for 2xx statuses."""
        return 200 <= self.status < 300


class ApiError(HarnessError):
    """The API server answered a request with an error status."""

    def __init__(self, method: str, path: str, response: ApiResponse) -> None:
        """Describe the failed request with the server's own message."""
        self.method = method
        self.path = path
        self.status = response.status
        self.body = response.body
        detail = response.body.get("message") if isinstance(response.body, dict) else None
        super().__init__(f"{method} {path} -> HTTP {response.status}: {detail or response.body}")

    @property
    def reason(self) -> str:
        """The Status object's ``reason`` (``NotFound``, ``AlreadyExists``, ``Forbidden``...)."""
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""


@dataclass(frozen=True)
class WatchEvent:
    """One event from a watch: ``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK`` or ``ERROR``."""

    type: str
    object: dict[str, Any]


class ApiClient:
    """A minimal synchronous HTTPS client for the Kubernetes API.

    One connection per request: simple, thread-safe, and cheap on loopback. Paths are
    API paths (``/api/v1/namespaces``); bodies are dicts sent as JSON.
    """

    def __init__(self, access: ClusterAccess, *, timeout: float = 30.0) -> None:
        """Trust ``access.ca_file`` and authenticate with its client certificate."""
        url = urllib.parse.urlsplit(access.server)
        if url.scheme != "https" or url.hostname is None:
            raise HarnessError(f"expected an https:// server URL, got {access.server!r}")
        self.access = access
        self.host = url.hostname
        self.port = url.port or 443
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(access.ca_file))
        self._context.load_cert_chain(str(access.cert_file), str(access.key_file))

    def _connect(self, timeout: float | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=self._context, timeout=timeout or self.timeout
        )

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        """Send one request and return the response, whatever its status.

        Raises :class:`HarnessError` only when the server cannot be reached.
        """
        target = path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = content_type
        connection = self._connect()
        try:
            connection.request(method, target, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise HarnessError(
                f"{method} {target} on {self.access.server} failed: {exc!r}"
            ) from exc
        finally:
            connection.close()
        text = raw.decode("utf-8", errors="replace")
        try:
            parsed: Any = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = text
        return ApiResponse(response.status, parsed)

    def _checked(self, method: str, path: str, response: ApiResponse) -> dict[str, Any]:
        if not response.ok:
            raise ApiError(method, path, response)
        return response.body if isinstance(response.body, dict) else {}

    def get(self, path: str, *, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET an object or list; raises :class:`ApiError` unless 2xx."""
        return self._checked("GET", path, self.request("GET", path, query=query))

    def create(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``obj`` to a collection path; raises :class:`ApiError` unless 2xx."""
        return self._checked("POST", path, self.request("POST", path, obj))

    def replace(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT ``obj`` at an object path; raises :class:`ApiError` unless 2xx."""
        return self._checked("PUT", path, self.request("PUT", path, obj))

    def patch(
        self, path: str, patch: Mapping[str, Any], *, patch_type: str = "merge"
    ) -> dict[str, Any]:
        """PATCH an object; ``patch_type`` is ``merge``, ``strategic-merge`` or ``json``."""
        content_type = {
            "merge": "application/merge-patch+json",
            "strategic-merge": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        response = self.request("PATCH", path, patch, content_type=content_type)
        return self._checked("PATCH", path, response)

    def delete(self, path: str) -> dict[str, Any]:
        """DELETE an object; raises :class:`ApiError` unless 2xx."""
        return self._checked("DELETE", path, self.request("DELETE", path))

    @contextlib.contextmanager
    def watch(
        self,
        path: str,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 30,
        field_selector: str | None = None,
    ) -> Iterator[Iterator[WatchEvent]]:
        """Open a watch on a collection path and yield an iterator of its events.

        The request is sent and the response headers received before the body of the
        ``with`` block runs, so the watch is registered on the server by then: a change
        made inside the block is seen. With ``resource_version`` the server first
        replays every change after that version. The iterator ends when the server
        closes the watch after ``timeout_seconds``.
        """
        query = {"watch": "1", "timeoutSeconds": str(timeout_seconds)}
        if resource_version is not None:
            query["resourceVersion"] = resource_version
        if field_selector is not None:
            query["fieldSelector"] = field_selector
        target = f"{path}?{urllib.parse.urlencode(query)}"
        # The socket timeout must outlast the server-side one, or reads would fail first.
        connection = self._connect(timeout=timeout_seconds + 10)
        try:
            try:
                connection.request("GET", target, headers={"Accept": "application/json"})
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise HarnessError(f"watch {target} failed: {exc!r}") from exc
            if response.status != 200:
                raw = response.read().decode("utf-8", errors="replace")
                try:
                    body: Any = json.loads(raw)
                except json.JSONDecodeError:
                    body = raw
                raise ApiError("GET", target, ApiResponse(response.status, body))
            yield _watch_events(response)
        finally:
            connection.close()


def _watch_events(response: http.client.HTTPResponse) -> Iterator[WatchEvent]:
    # The API server writes one JSON object per line (chunked); http.client de-chunks.
    while True:
        line = response.readline()
        if not line:
            return
        if not line.strip():
            continue
        event = json.loads(line)
        yield WatchEvent(type=event["type"], object=event["object"])


# --- objects ------------------------------------------------------------------------------


def create_namespace(
    api: ApiClient,
    name: str | None = None,
    *,
    prefix: str = "test",
    labels: Mapping[str, str] | None = None,
) -> str:
    """Create a namespace (``name``, or a unique one starting with ``prefix``); return its name.

    Without a namespace controller, deleted namespaces stay ``Terminating`` forever, so
    tests get a fresh namespace each instead of reusing and cleaning one.
    """
    name = name or unique_name(prefix)
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    )
    return name


def create_pod(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    node_name: str,
    labels: Mapping[str, str] | None = None,
    pod_ip: str | None = None,
    pod_ips: Sequence[str] | None = None,
    host_ip: str | None = None,
) -> dict[str, Any]:
    """Create a Pod object bound to ``node_name``; with ``pod_ip``, also mark it Running.

    Nothing runs it: there is no kubelet. Its status (IP, phase) is what
    :func:`set_pod_status` writes, as a kubelet would. Returns the stored Pod.
    """
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "main", "image": PLACEHOLDER_IMAGE}],
            # No ServiceAccount exists without the controllers; do not mount a token.
            "automountServiceAccountToken": False,
        },
    }
    created = api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    if pod_ip is None:
        return created
    return set_pod_status(api, namespace, name, pod_ip=pod_ip, pod_ips=pod_ips, host_ip=host_ip)


def set_pod_status(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    pod_ip: str,
    pod_ips: Sequence[str] | None = None,
    host_ip: str | None = None,
    phase: str = "Running",
    ready: bool = True,
) -> dict[str, Any]:
    """Write ``status.podIP``/``podIPs``, phase and the Ready condition, as a kubelet would.

    Goes through the ``status`` subresource (the only way status is written); returns
    the updated Pod. ``pod_ips`` defaults to ``[pod_ip]``; its first entry must be
    ``pod_ip``, as the API server requires.
    """
    ips = list(pod_ips) if pod_ips else [pod_ip]
    if ips[0] != pod_ip:
        raise HarnessError(f"podIPs[0] must equal podIP: {ips[0]} != {pod_ip}")
    status: dict[str, Any] = {
        "phase": phase,
        "podIP": pod_ip,
        "podIPs": [{"ip": ip} for ip in ips],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if host_ip is not None:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    return api.patch(f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status})


def create_service(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    cluster_ip: str,
    ports: Sequence[tuple[int, str]] = ((53, "UDP"), (53, "TCP")),
    selector: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Create a ClusterIP Service with a fixed ``cluster_ip``; return the stored Service.

    ``ports`` are ``(port, protocol)`` pairs. The address must lie in the control plane's
    service range (10.244.250.0/24 by default; .1 is taken by ``kubernetes``).
    """
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "clusterIP": cluster_ip,
        "ports": [
            {"name": f"{protocol.lower()}-{port}", "port": port, "protocol": protocol}
            for port, protocol in ports
        ],
    }
    if selector:
        spec["selector"] = dict(selector)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return api.create(f"/api/v1/namespaces/{namespace}/services", service)


def create_node(
    api: ApiClient,
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    internal_ip: str | None = None,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """Create a Node object (and its ``InternalIP`` address, through ``status``).

    Nodes are cluster-wide and outlive any test namespace: with ``exist_ok`` an existing
    Node of that name is returned unchanged instead of raising.
    """
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {})},
    }
    try:
        created = api.create("/api/v1/nodes", node)
    except ApiError as exc:
        if exist_ok and exc.reason == "AlreadyExists":
            return api.get(f"/api/v1/nodes/{name}")
        raise
    if internal_ip is None:
        return created
    status = {"addresses": [{"type": "InternalIP", "address": internal_ip}]}
    return api.patch(f"/api/v1/nodes/{name}/status", {"status": status})
