"""An in-memory :class:`~acns_operator.operator.kube.KubeApi` for fast tests.

It keeps objects by API path and models just the API server semantics the operator
relies on: resourceVersions bumped on every write, 404 for absent objects, 409 for
an existing name or a stale resourceVersion, merge patches (lists replaced whole)
and ``/status`` subresource paths that write only ``status``. Failures can be
injected per method. Admission, schemas and watches are not modelled: the
integration tests use a real kube-apiserver for those.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from acns_operator.operator.kube import KubeApiError


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class MemoryKubeApi:
    """Objects in a dict, keyed by their API path."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, list[KubeApiError]] = {}
        self._version = 0

    def fail_next(self, method: str, error: KubeApiError) -> None:
        """Make the next call of ``method`` (get, create, ...) raise ``error``."""
        self.failures.setdefault(method, []).append(error)

    def _enter(self, method: str, path: str) -> None:
        self.calls.append((method, path))
        pending = self.failures.get(method)
        if pending:
            raise pending.pop(0)

    def _bump(self, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        body.setdefault("metadata", {})["resourceVersion"] = str(self._version)
        return body

    @staticmethod
    def _split(path: str) -> tuple[str, bool]:
        if path.endswith("/status"):
            return path.removesuffix("/status"), True
        return path, False

    def put(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object directly (test set-up), with a fresh resourceVersion."""
        stored = self._bump(copy.deepcopy(dict(body)))
        self.objects[path] = stored
        return copy.deepcopy(stored)

    async def get(self, path: str) -> dict[str, Any]:
        """GET: a copy of the object, or 404."""
        self._enter("get", path)
        base, _ = self._split(path)
        if base not in self.objects:
            raise KubeApiError(404, "NotFound", f"{path} not found")
        return copy.deepcopy(self.objects[base])

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST to a collection: 409 when the name exists."""
        self._enter("create", path)
        name = (body.get("metadata") or {}).get("name")
        target = f"{path}/{name}"
        if target in self.objects:
            raise KubeApiError(409, "AlreadyExists", f"{target} already exists")
        return self.put(target, body)

    def _check_version(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if path not in self.objects:
            raise KubeApiError(404, "NotFound", f"{path} not found")
        current = self.objects[path]
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "the object has been modified")
        return current

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT: 409 on a stale resourceVersion."""
        self._enter("replace", path)
        self._check_version(path, body)
        return self.put(path, body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH: a status path changes only ``status``, others everything but it."""
        self._enter("merge_patch", path)
        base, status_only = self._split(path)
        current = self._check_version(base, patch)
        updated = merge(current, patch)
        if status_only:
            updated = {**current, "status": updated.get("status")}
        return self.put(base, updated)

    async def delete(self, path: str) -> dict[str, Any]:
        """DELETE: 404 when absent."""
        self._enter("delete", path)
        if path not in self.objects:
            raise KubeApiError(404, "NotFound", f"{path} not found")
        return self.objects.pop(path)
