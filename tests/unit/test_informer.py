"""The informer's list: streamed (WatchList) where the apiserver can, paged LISTs where it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from kubernetes_asyncio.client import ApiClient

import kubeio.informer as informer_module
from kubeio.informer import INITIAL_EVENTS_END, Informer
from kubeio.rest import ApiException


class Kept:
    def __init__(self) -> None:
        self.replaced: list[list[Any]] = []
        self.applied: list[tuple[str, Any]] = []
        self.event_applied = asyncio.Event()

    def replace(self, objects: list[Any]) -> None:
        self.replaced.append(objects)

    def apply(self, event_type: str, obj: Any) -> None:
        self.applied.append((event_type, obj))
        self.event_applied.set()

    @staticmethod
    def compact(obj: dict[str, Any]) -> str:
        return str(obj["metadata"]["name"])


def added(name: str) -> dict[str, Any]:
    return {"type": "ADDED", "object": {"metadata": {"name": name, "resourceVersion": "5"}}}


def bookmark(version: str, *, end: bool) -> dict[str, Any]:
    annotations = {INITIAL_EVENTS_END: "true"} if end else {}
    return {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": version, "annotations": annotations}}}


def make(kept: Kept) -> Informer:
    return Informer(cast(ApiClient, None), "/api/v1/secrets", kept)


async def test_a_streamed_list_hands_over_the_objects_at_the_end_bookmark_and_the_watch_goes_on_from_its_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries: list[dict[str, Any]] = []

    async def stream(api: object, path: str, *, query: dict[str, Any], **_: Any) -> AsyncIterator[dict[str, Any]]:
        queries.append(dict(query))
        if query.get("sendInitialEvents"):
            for event in (added("a"), bookmark("6", end=False), added("b"), bookmark("9", end=True), added("late")):
                yield event
            raise AssertionError("read past the end bookmark")
        yield {"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "10"}}}
        await asyncio.Event().wait()

    async def no_list(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a paged LIST where the list streams")

    monkeypatch.setattr(informer_module, "stream_json_lines", stream)
    monkeypatch.setattr(informer_module, "json_request", no_list)
    kept = Kept()
    informer = make(kept)
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 5)
    await asyncio.wait_for(kept.event_applied.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert kept.replaced == [["a", "b"]]
    assert kept.applied == [("MODIFIED", "a")]
    assert queries[0]["resourceVersionMatch"] == "NotOlderThan"
    assert "resourceVersion" not in queries[0]
    assert queries[1]["resourceVersion"] == "9"
    assert "sendInitialEvents" not in queries[1]


@pytest.mark.parametrize("status", [400, 422])
async def test_an_apiserver_that_refuses_to_stream_gets_paged_lists_from_then_on(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    streamed = 0
    pages = [
        {"items": [{"metadata": {"name": "a"}}], "metadata": {"continue": "next"}},
        {"items": [{"metadata": {"name": "b"}}], "metadata": {"resourceVersion": "7"}},
        {"items": [{"metadata": {"name": "c"}}], "metadata": {"resourceVersion": "8"}},
    ]

    async def stream(api: object, path: str, *, query: dict[str, Any], **_: Any) -> AsyncIterator[dict[str, Any]]:
        nonlocal streamed
        streamed += 1
        raise ApiException(status=status, reason="Invalid")
        yield {}

    async def page(*args: Any, **kwargs: Any) -> Any:
        return pages.pop(0)

    monkeypatch.setattr(informer_module, "stream_json_lines", stream)
    monkeypatch.setattr(informer_module, "json_request", page)
    kept = Kept()
    informer = make(kept)
    await informer.list()
    await informer.list()

    assert kept.replaced == [["a", "b"], ["c"]]
    assert informer.resource_version == "8"
    assert streamed == 1


async def test_a_stream_that_ends_before_its_end_bookmark_is_a_transient_failure_and_hands_over_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def stream(api: object, path: str, **_: Any) -> AsyncIterator[dict[str, Any]]:
        yield added("a")

    monkeypatch.setattr(informer_module, "stream_json_lines", stream)
    kept = Kept()
    informer = make(kept)

    with pytest.raises(ConnectionError):
        await informer.list()

    assert kept.replaced == []
    assert not informer.synced.is_set()


async def test_an_error_event_in_the_stream_is_raised_with_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    async def stream(api: object, path: str, **_: Any) -> AsyncIterator[dict[str, Any]]:
        yield added("a")
        yield {"type": "ERROR", "object": {"code": 403, "message": "forbidden"}}

    monkeypatch.setattr(informer_module, "stream_json_lines", stream)

    with pytest.raises(ApiException) as raised:
        await make(Kept()).list()

    assert raised.value.status == 403
