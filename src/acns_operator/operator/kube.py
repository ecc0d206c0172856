"""A small asyncio client for the few API calls kopf does not make for us.

Status writes, Events, the leader Lease, the TLS Secret and the
ValidatingWebhookConfiguration. kopf's own client is private API, so we keep ours:
plain JSON over aiohttp, the API server's ``Status`` errors raised as
:class:`KubeApiError` (an :class:`~acns_operator.errors.UpstreamError`) with the HTTP
code, so callers can tell "not found" and "conflict" from real failures.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp

from acns_operator.errors import UpstreamError
from acns_operator.operator.connection import Connection

MERGE_PATCH = "application/merge-patch+json"


class KubeApiError(UpstreamError):
    """The API server refused or failed a request."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"API server answered {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.api_message = message

    @property
    def not_found(self) -> bool:
        """404: the object does not exist."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: exists already, or the resourceVersion we sent is stale."""
        return self.status == 409

    @property
    def forbidden(self) -> bool:
        """403: RBAC does not allow it."""
        return self.status == 403


class KubeApi(Protocol):
    """The calls the operator's components make; :class:`KubeClient` implements them,
    unit tests pass an in-memory fake."""

    async def get(self, path: str) -> dict[str, Any]:
        """GET an object."""
        ...

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object to its collection path."""
        ...

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object."""
        ...

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH with a JSON merge patch."""
        ...

    async def delete(self, path: str) -> dict[str, Any]:
        """DELETE an object."""
        ...


class KubeClient:
    """JSON requests against one API server; use as an async context manager."""

    def __init__(self, connection: Connection, *, timeout: float = 30.0) -> None:
        self.connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._ssl = self.connection.ssl_context()
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer, or KubeApiError for any non-2xx."""
        headers = {"Accept": "application/json"}
        token = self.connection.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        session = self._session_for_loop()
        try:
            async with session.request(
                method,
                self.connection.server + path,
                data=data,
                headers=headers,
                params=params,
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{method} {path} failed: {exc!r}") from exc
        try:
            payload = json.loads(text) if text else {}
        except json.JSONDecodeError:
            payload = {"message": text}
        if not isinstance(payload, dict):
            payload = {"message": str(payload)}
        if status >= 300:
            raise KubeApiError(
                status, str(payload.get("reason") or ""), str(payload.get("message") or text)
            )
        return payload

    async def get(self, path: str) -> dict[str, Any]:
        """GET an object."""
        return await self.request("GET", path)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object to its collection path."""
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object (its resourceVersion makes it conditional)."""
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH with a JSON merge patch (lists are replaced as a whole)."""
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def delete(self, path: str) -> dict[str, Any]:
        """DELETE an object."""
        return await self.request("DELETE", path)
