"""A small Kubernetes API client for the agent: list + watch, over aiohttp.

:class:`KubeClient` reads a kubeconfig (certificates or token, embedded or as files)
or the in-cluster service-account token. :class:`Reflector` keeps one resource in
sync like client-go's reflector: list (paginated), then watch from the list's
``resourceVersion`` with bookmarks; on ``410 Gone`` (or any other failure) it lists
again, with exponential backoff; so does any other error, a callback's included (a
reflector never dies). While the API server is unreachable nothing is removed:
consumers keep their last state.

The agent watches Pods of *every* node, because peers selected by ``toEndpoints`` can
live anywhere (Cilium's ipcache does the same). The API server cannot project fields,
so each Pod event carries the whole object; the agent keeps only namespace, name,
labels, node, pod and host IP (a few hundred bytes per pod). At 10,000 pods that is a
few MB of memory, and every pod change in the cluster costs each agent one event.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from acns_operator.errors import ConfigurationError, UpstreamError

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class GoneError(UpstreamError):
    """The watch's resourceVersion is too old (410 Gone): list again."""


@dataclass(slots=True)
class KubeConfig:
    """Where the API server is and how to authenticate."""

    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    _temp_files: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Remove temporary key files."""
        for path in self._temp_files:
            Path(path).unlink(missing_ok=True)
        self._temp_files.clear()


def _data_or_file(entry: Mapping[str, Any], key: str, temp: list[str]) -> str | None:
    data = entry.get(f"{key}-data")
    if data:
        handle = tempfile.NamedTemporaryFile(prefix="acns-agent-", delete=False)  # noqa: SIM115
        with handle:
            handle.write(base64.b64decode(data))
        os.chmod(handle.name, 0o600)
        temp.append(handle.name)
        return handle.name
    path = entry.get(key)
    return str(path) if path else None


def load_kubeconfig(path: str | None) -> KubeConfig:
    """A kubeconfig file (current context), or the in-cluster service account."""
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT.exists():
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        token = (SERVICE_ACCOUNT / "token").read_text().strip()
        return KubeConfig(f"https://{host}:{port}", context, token)
    path = path or os.environ.get("KUBECONFIG")
    if not path:
        raise ConfigurationError("no kubeconfig given and not running in a cluster")
    try:
        config = yaml.safe_load(Path(path).read_text())
        current = config.get("current-context") or config["contexts"][0]["name"]
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
    except (OSError, KeyError, StopIteration, TypeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read kubeconfig {path}: {exc}") from exc
    temp: list[str] = []
    ssl_context: ssl.SSLContext | bool
    if cluster.get("insecure-skip-tls-verify"):
        ssl_context = False
    else:
        ssl_context = ssl.create_default_context(
            cafile=_data_or_file(cluster, "certificate-authority", temp)
        )
    cert = _data_or_file(user, "client-certificate", temp)
    key = _data_or_file(user, "client-key", temp)
    if cert and key and isinstance(ssl_context, ssl.SSLContext):
        ssl_context.load_cert_chain(cert, key)
    token = user.get("token")
    if user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    return KubeConfig(str(cluster["server"]).rstrip("/"), ssl_context, token, temp)


async def _check(response: aiohttp.ClientResponse, what: str) -> None:
    """Raise :class:`GoneError` on 410 and :class:`UpstreamError` on any other non-200."""
    if response.status == 410:
        raise GoneError(f"{what}: 410 Gone")
    if response.status != 200:
        text = await response.text()
        raise UpstreamError(f"{what}: HTTP {response.status}: {text[:200]}")


class KubeClient:
    """GET lists and streaming watches against the API server."""

    def __init__(self, config: KubeConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        headers = {"Accept": "application/json"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=config.ssl_context),
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=None),
        )
        self._timeout = timeout

    async def list(self, path: str) -> tuple[list[dict[str, Any]], str]:
        """All items (following ``continue``) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            params = {"limit": "500"}
            if token:
                params["continue"] = token
            async with self._session.get(
                self.config.server + path,
                params=params,
                timeout=aiohttp.ClientTimeout(total=self._timeout * 4),
            ) as response:
                await _check(response, f"list {path}")
                body = await response.json()
            items.extend(body.get("items") or [])
            version = body.get("metadata", {}).get("resourceVersion", "")
            token = body.get("metadata", {}).get("continue")
            if not token:
                return items, version

    async def watch(
        self,
        path: str,
        resource_version: str,
        on_event: Callable[[str, dict[str, Any]], Awaitable[None]],
        *,
        timeout_seconds: int = 300,
    ) -> str:
        """Stream events until the server ends the watch; returns the last version."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        # The server ends the watch after timeout_seconds; a peer that vanished without
        # closing the connection (a partition) must not hang the watch forever.
        limit = aiohttp.ClientTimeout(total=timeout_seconds + self._timeout, connect=self._timeout)
        async with self._session.get(
            self.config.server + path, params=params, timeout=limit
        ) as response:
            await _check(response, f"watch {path}")
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise GoneError(f"watch {path}: {obj.get('message')}")
                    raise UpstreamError(f"watch {path}: {obj.get('message')}")
                resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                if kind == "BOOKMARK":
                    continue
                await on_event(str(kind), obj)
        return resource_version

    async def close(self) -> None:
        """Close the HTTP session and remove temporary files."""
        await self._session.close()
        self.config.close()


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` (or ``name`` for cluster-scoped objects)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


class Reflector:
    """Keeps one resource in sync through callbacks (see the module doc)."""

    def __init__(
        self,
        client: KubeClient,
        path: str,
        *,
        on_replace: Callable[[list[dict[str, Any]]], Awaitable[None]],
        on_event: Callable[[str, dict[str, Any]], Awaitable[None]],
        backoff_max: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.on_replace = on_replace
        self.on_event = on_event
        self.backoff_max = backoff_max
        self.name = name or path
        self.synced = asyncio.Event()
        self.relists = 0
        self.failures = 0

    async def run(self) -> None:
        """List and watch forever (cancel to stop)."""
        delay = 0.2
        while True:
            try:
                items, version = await self.client.list(self.path)
                await self.on_replace(items)
                self.relists += 1
                self.synced.set()
                delay = 0.2
                while True:
                    version = await self.client.watch(self.path, version, self.on_event)
            except asyncio.CancelledError:
                raise
            except GoneError:
                log.info("%s: resource version expired, listing again", self.name)
                continue
            except Exception as exc:  # a dead reflector would stop watching for good
                self.failures += 1
                expected = isinstance(
                    exc, aiohttp.ClientError | UpstreamError | OSError | ValueError
                )
                log.warning(
                    "%s: %s; retrying in %.1fs (keeping the last state)",
                    self.name,
                    exc,
                    delay,
                    exc_info=not expected,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
