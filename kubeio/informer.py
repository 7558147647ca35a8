"""List-then-watch for one resource path, feeding a handler that keeps what it needs in memory.

List, hand the handler the whole state, then watch from the list's resourceVersion. The list is streamed where
the apiserver can (a watch with ``sendInitialEvents``, Kubernetes' WatchList: the objects arrive one event each,
so decoding one overlaps the apiserver encoding the next, and the state is consistent at the resourceVersion of
the bookmark that ends them); an apiserver that refuses that gets paged LISTs, from then on. Bookmarks keep the
resourceVersion fresh; a 410 Gone (or an ERROR event saying so) relists; a broken connection reconnects with
exponential backoff and jitter; any other failure ends ``run`` (see there). ``synced`` is set after the first
complete list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes_asyncio import client

from kubeio.errors import describe_error, transient
from kubeio.rest import ApiException, json_request, stream_json_lines, without_managed_fields

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

# The annotation of the bookmark that ends a streamed list's initial events.
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# What an apiserver without WatchList answers to ``sendInitialEvents``: the request is invalid there.
STREAMING_REFUSED = (400, 422)
STREAMED_LIST_SECONDS = 3600


class Handler(Protocol):
    """What an informer feeds. A handler may also define ``compact(obj)``: then each object is reduced by it as
    soon as it is decoded, and ``replace``/``apply`` receive what it returns — so a relist of 10,000 objects never
    holds 10,000 whole objects at once."""

    def replace(self, objects: list[Any]) -> None:
        """The full state after a (re)list."""

    def apply(self, event_type: str, obj: Any) -> None:
        """One ADDED, MODIFIED or DELETED event."""


class Gone(Exception):
    """The resourceVersion we watch from is too old: relist."""


class Informer:
    def __init__(
        self,
        api: client.ApiClient,
        path: str,
        handler: Handler,
        *,
        query: Mapping[str, str] | None = None,
        page_size: int = 500,
        watch_seconds: int = 300,
        max_backoff: float = 30.0,
        managed_fields: bool = True,
        streaming: bool = True,
    ) -> None:
        """``managed_fields=False``: objects are decoded without ``metadata.managedFields`` (for a handler that
        never reads them, the start-up list decodes half the bytes). ``streaming=False``: paged LISTs only."""
        self.api = api
        self.path = path
        self.handler = handler
        self.query = dict(query or {})
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.max_backoff = max_backoff
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.compact: Callable[[JsonObject], Any] = getattr(handler, "compact", lambda obj: obj)
        self.prepare = None if managed_fields else without_managed_fields
        self.streaming = streaming

    async def list(self) -> None:
        if self.streaming:
            try:
                await self._streamed_list()
                return
            except ApiException as error:
                if error.status not in STREAMING_REFUSED:
                    raise
                log.info(
                    "%s: the apiserver does not stream lists (%s); listing in pages", self.path, describe_error(error)
                )
                self.streaming = False
        await self._paged_list()

    async def _streamed_list(self) -> None:
        query: dict[str, str | int | bool] = {
            **self.query,
            "watch": "true",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",  # with no resourceVersion: as consistent as a LIST
            "allowWatchBookmarks": "true",
            # Long enough for any list: one that took longer than its watch would start again from scratch forever.
            "timeoutSeconds": STREAMED_LIST_SECONDS,
        }
        items: list[Any] = []
        events = stream_json_lines(
            self.api, self.path, query=query, timeout=STREAMED_LIST_SECONDS + 60, prepare=self.prepare
        )
        async with contextlib.aclosing(events):
            async for event in events:
                kind = event.get("type")
                obj = event.get("object") or {}
                metadata = obj.get("metadata") or {}
                if kind == "ADDED":
                    items.append(self.compact(obj))
                elif kind == "BOOKMARK" and (metadata.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
                    self.resource_version = str(metadata.get("resourceVersion", ""))
                    self.handler.replace(items)
                    self.synced.set()
                    return
                elif kind == "ERROR":
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
        raise ConnectionError(f"the streamed list of {self.path} ended before its last object")  # transient: again

    async def _paged_list(self) -> None:
        items: list[Any] = []
        token = ""
        while True:
            query: dict[str, str | int | bool] = {**self.query, "limit": self.page_size}
            if token:
                query["continue"] = token
            if self.prepare is None:
                page = await json_request(self.api, "GET", self.path, query=query)
            else:
                page = await json_request(self.api, "GET", self.path, query=query, prepare=self.prepare)
            items.extend(self.compact(obj) for obj in page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                self.resource_version = str(metadata.get("resourceVersion", ""))
                break
        self.handler.replace(items)
        self.synced.set()

    async def watch(self) -> None:
        query: dict[str, str | int | bool] = {
            **self.query,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version,
            "timeoutSeconds": self.watch_seconds + random.randint(0, 30),  # noqa: S311 - spreads reconnects
        }
        timeout = self.watch_seconds + 60
        async for event in stream_json_lines(self.api, self.path, query=query, timeout=timeout, prepare=self.prepare):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = str(version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.handler.apply(kind, self.compact(obj))

    async def run(self) -> None:
        """List and watch until cancelled. A transient failure (see ``kubeio.errors.transient``) reconnects with
        backoff; anything else — a terminal answer such as 403 (RBAC) or 404 (a CRD not installed), or an error in
        the handler — ends it with that exception, so the process that runs it can stop instead of serving from an
        index that silently stopped changing."""
        backoff = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self.list()
                    need_list = False
                await self.watch()
                backoff = 0.2
            except Gone:
                log.info("watch of %s expired (410 Gone); relisting", self.path)
                need_list = True
            except Exception as error:
                if isinstance(error, ApiException) and error.status == 410:
                    need_list = True
                    continue
                if not transient(error):
                    log.error("watch of %s failed for good: %s", self.path, describe_error(error))
                    raise
                log.warning("watch of %s broke: %s; retrying in %.1fs", self.path, describe_error(error), backoff)
                await asyncio.sleep(backoff * (1 + random.random()))  # noqa: S311 - jitter, not secrecy
                backoff = min(backoff * 2, self.max_backoff)
