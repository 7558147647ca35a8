"""An in-memory Kubernetes API at the ``json_request`` seam: what the reconcilers' unit tests run against.

Objects are stored by path. It answers as the apiserver does where the reconcilers rely on it: GET of an object
or a list (across namespaces too, with label and field selectors), POST (409 when the name is taken;
``generateName``), PUT and merge PATCH (409 when a given resourceVersion is stale; a ``/status`` subresource),
DELETE (preconditions; an object with finalizers only gets its deletionTimestamp), 404 for what does not exist. Every
write bumps the resourceVersion, and a change of ``spec`` the generation. ``fail`` makes the next matching request
answer with an error, as another admission webhook or a missing RBAC rule would.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from kubernetes_asyncio import client

import kubeio.rest
from controller.frame.logs import reconciling
from controller.frame.queue import WorkQueue
from kubeio.rest import MERGE_PATCH, ApiException
from rules.workloads import KINDS as KIND_TABLE

JsonObject = dict[str, Any]
# What the reconcilers are given as their ApiClient: the fake answers every request, so none is ever made.
NO_CLIENT = cast(client.ApiClient, None)
KINDS = {found.resource: kind for kind, found in KIND_TABLE.items()} | {"events": "Event"}
VERSIONS = {found.resource: found.api_version for found in KIND_TABLE.values()} | {"events": "v1"}


@dataclass(frozen=True)
class Where:
    """Where a path points: a collection (``name`` None) or one object, with an optional subresource."""

    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    resource: str
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def collection(self) -> str:
        return (
            self.prefix + (f"/namespaces/{self.namespace}" if self.namespace is not None else "") + f"/{self.resource}"
        )

    @property
    def object_path(self) -> str:
        return f"{self.collection}/{self.name}"


def where(path: str) -> Where:
    parts = path.strip("/").split("/")
    prefix_length = 2 if parts[0] == "api" else 3
    prefix, rest = "/" + "/".join(parts[:prefix_length]), parts[prefix_length:]
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    return Where(prefix, rest[0], namespace, name, subresource)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def api_error(status: int, reason: str, message: str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "code": status, "reason": reason, "message": message}).encode()
    return error


def selected(obj: JsonObject, query: Mapping[str, Any]) -> bool:
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    for term in filter(None, str(query.get("labelSelector", "")).split(",")):
        key, has_value, value = term.partition("=")
        if (has_value and labels.get(key) != value) or key not in labels:
            return False
    for term in filter(None, str(query.get("fieldSelector", "")).split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name" and metadata.get("name") != value:
            return False
        if key == "metadata.namespace" and metadata.get("namespace") != value:
            return False
    return True


@dataclass
class Failure:
    method: str
    path: str
    status: int
    message: str
    times: int


@dataclass
class FakeApi:
    objects: dict[str, JsonObject] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _uids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # ---- the seam -----------------------------------------------------------------------------------------

    async def json_request(
        self,
        api: Any,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> JsonObject:
        self.requests.append((method, path))
        for failure in self.failures:
            if failure.times and failure.method == method and failure.path == path:
                failure.times -= 1
                raise api_error(failure.status, "Refused", failure.message)
        body = copy.deepcopy(body)
        place = where(path)
        if method == "GET":
            return self.listing(place, query or {}) if place.name is None else self._get(place)
        if method == "POST":
            return self._create(place, body)
        if method == "PUT":
            return self._update(place, body, replace=True)
        if method == "PATCH":
            if content_type != MERGE_PATCH:
                raise AssertionError(f"the fake API takes merge patches only, not {content_type}")
            return self._update(place, body, replace=False)
        if method == "DELETE":
            return self._delete(place, body or {})
        raise AssertionError(f"unexpected method {method}")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every module of the product that called ``kubeio.rest.json_request`` now calls this API."""
        real = kubeio.rest.json_request
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] in ("kubeio", "controller") and getattr(module, "json_request", None) is real:
                monkeypatch.setattr(module, "json_request", self.json_request)

    # ---- what tests set up and look at --------------------------------------------------------------------

    def fail(self, method: str, path: str, status: int, message: str = "refused", *, times: int = 1) -> None:
        self.failures.append(Failure(method, path, status, message, times))

    def put(self, path: str, obj: JsonObject) -> JsonObject:
        """Store an object as it is, as someone else created it (a collection path, its name from the object)."""
        place = where(path)
        return self._create(place, copy.deepcopy(obj))

    def patch(self, path: str, patch: JsonObject) -> JsonObject:
        """Someone else's merge patch."""
        return self._update(where(path), copy.deepcopy(patch), replace=False)

    def delete(self, path: str) -> None:
        """Someone else's delete."""
        self._delete(where(path), {})

    def get(self, path: str) -> JsonObject | None:
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    def listing(self, place: Where | str, query: Mapping[str, Any] | None = None) -> JsonObject:
        place = where(place) if isinstance(place, str) else place
        items = [
            copy.deepcopy(obj)
            for path, obj in sorted(self.objects.items())
            if self._in(path, place) and selected(obj, query or {})
        ]
        # Paged as the apiserver pages (limit, continue): the token here is the offset of the next item.
        limit, start = int((query or {}).get("limit") or 0), int((query or {}).get("continue") or 0)
        metadata = {"resourceVersion": str(next(self._versions))}
        if limit and start + limit < len(items):
            metadata["continue"] = str(start + limit)
        return {"kind": "List", "metadata": metadata, "items": items[start : start + limit] if limit else items[start:]}

    def events(self, reason: str | None = None) -> list[JsonObject]:
        return [
            obj
            for path, obj in sorted(self.objects.items())
            if where(path).resource == "events" and reason in (None, obj.get("reason"))
        ]

    def writes(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path in self.requests if method != "GET"]

    # ---- the apiserver's part -----------------------------------------------------------------------------

    @staticmethod
    def _in(path: str, place: Where) -> bool:
        stored = where(path)
        return (
            stored.prefix == place.prefix
            and stored.resource == place.resource
            and (place.namespace is None or stored.namespace == place.namespace)
        )

    def _get(self, place: Where) -> JsonObject:
        found = self.objects.get(place.object_path)
        if found is None:
            raise api_error(404, "NotFound", f'{place.resource} "{place.name}" not found')
        return copy.deepcopy(found)

    def _stamp(self, obj: JsonObject) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def _create(self, place: Where, body: JsonObject) -> JsonObject:
        metadata = body.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = f"{metadata['generateName']}{next(self._uids):05d}"
        name = metadata.get("name")
        if not name:
            raise api_error(422, "Invalid", "metadata.name: Required value")
        if place.namespace is not None:
            metadata["namespace"] = place.namespace
        path = f"{place.collection}/{name}"
        if path in self.objects:
            raise api_error(409, "AlreadyExists", f'{place.resource} "{name}" already exists')
        body.setdefault("apiVersion", VERSIONS.get(place.resource, place.prefix.removeprefix("/apis/")))
        body.setdefault("kind", KINDS.get(place.resource, place.resource))
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        metadata.setdefault("creationTimestamp", self.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
        metadata.setdefault("generation", 1)
        self._stamp(body)
        self.objects[path] = body
        return copy.deepcopy(body)

    def _update(self, place: Where, body: JsonObject, *, replace: bool) -> JsonObject:
        current = self._get(place)
        wanted = str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise api_error(409, "Conflict", "the object has been modified; please apply your changes to the latest")
        if place.subresource == "status":
            updated = copy.deepcopy(current)
            updated["status"] = merge_patch(current.get("status"), (body or {}).get("status"))
        elif replace:
            updated = body
            updated.setdefault("apiVersion", current.get("apiVersion"))
            updated.setdefault("kind", current.get("kind"))
            for kept in ("uid", "creationTimestamp", "generation", "namespace", "name"):
                if kept in current["metadata"]:
                    updated["metadata"][kept] = current["metadata"][kept]
        else:
            patch = copy.deepcopy(body or {})
            (patch.get("metadata") or {}).pop("resourceVersion", None)
            updated = merge_patch(current, patch)
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = int(current["metadata"].get("generation") or 1) + 1
        self._stamp(updated)
        metadata = updated["metadata"]
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            del self.objects[place.object_path]
        else:
            self.objects[place.object_path] = updated
        return copy.deepcopy(updated)

    def _delete(self, place: Where, options: JsonObject) -> JsonObject:
        current = self._get(place)
        metadata = current["metadata"]
        preconditions = options.get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if key in preconditions and preconditions[key] != metadata.get(key):
                raise api_error(409, "Conflict", f"Precondition failed: {key} does not match")
        if metadata.get("finalizers"):
            metadata.setdefault("deletionTimestamp", self.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._stamp(current)
            self.objects[place.object_path] = current
            return copy.deepcopy(current)
        del self.objects[place.object_path]
        return {"kind": "Status", "status": "Success"}


def feed(api: FakeApi, path: str, handler: Any, query: Mapping[str, str] | None = None) -> None:
    """What an informer's list hands its handler: the objects at ``path``, each reduced by the handler's compact."""
    compact = getattr(handler, "compact", lambda obj: obj)
    handler.replace([compact(obj) for obj in api.listing(path, query)["items"]])


async def settle(
    api: FakeApi,
    queue: WorkQueue[Any],
    reconcile: Callable[[Any], Awaitable[object]],
    relist: Callable[[], None],
    *,
    loop: str,
) -> None:
    """Relist, then reconcile every key that is due now, until a round writes nothing: where a loop gets to after
    the watch events its own writes cause (a key delayed to later, such as a schedule, is not waited for). Each
    reconcile logs with its fields, as under the frame's workers."""
    for _ in range(10):
        api.requests.clear()
        relist()
        while (key := queue.try_get()[0]) is not None:
            with reconciling(loop, key):
                await reconcile(key)
            queue.done(key)
        if not api.writes():
            return
    raise AssertionError("the reconciles never settled: each round wrote something")
