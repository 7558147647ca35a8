"""The write-only API's write path against the in-memory API (tests/unit/fakeapi.py): read, plan, write with the
resourceVersion read, and on a 409 read again — so that a writer that came in between keeps its keys."""

from __future__ import annotations

import base64
from typing import Any, cast

import pytest
from kubernetes_asyncio import client

import webhook.secretsapi as edge
from kubeio.rest import ApiException
from rules.secretsapi import ApiError, WriteRequest
from rules.workloads import resource_path
from tests.unit.fakeapi import FakeApi
from webhook.apiprotocol import Identity
from webhook.referrers import ReferrerIndex

SECRETS = resource_path("Secret", "shop")
STRIPE = resource_path("Secret", "shop", "stripe")


def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeApi, edge.SecretsApi]:
    api = FakeApi()
    api.install(monkeypatch)
    monkeypatch.setattr(edge, "json_request", api.json_request)
    # Any client will do: the fake answers every request at the json_request seam.
    return api, edge.SecretsApi(ReferrerIndex(), api=cast(client.ApiClient, object()))


def values(api: FakeApi) -> dict[str, str]:
    found = api.get(STRIPE) or {}
    return {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}


async def test_a_missing_secret_is_created_and_an_existing_one_keeps_the_keys_not_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api, secrets = fake(monkeypatch)
    created = await secrets._write(WriteRequest("shop", "stripe", {"A": b"1"}), {})
    updated = await secrets._write(WriteRequest("shop", "stripe", {"B": b"2"}), {})
    assert (created.created, updated.set) == (True, ("B",))
    assert values(api) == {"A": "1", "B": "2"}
    assert ("POST", SECRETS) in api.requests
    assert ("PUT", STRIPE) in api.requests


async def test_a_writer_that_came_in_between_keeps_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    api, secrets = fake(monkeypatch)
    api.put(SECRETS, {"metadata": {"name": "stripe", "namespace": "shop"}, "data": {"A": "MQ=="}})
    real = api.json_request
    interleaved: list[bool] = []

    async def another_writer_after_our_first_read(*args: Any, **kwargs: Any) -> Any:
        answer = await real(*args, **kwargs)
        if args[1] == "GET" and not interleaved:
            interleaved.append(True)
            api.patch(STRIPE, {"data": {"OTHER": base64.b64encode(b"theirs").decode()}})
        return answer

    monkeypatch.setattr(edge, "json_request", another_writer_after_our_first_read)
    monkeypatch.setattr("kubeio.rest.json_request", another_writer_after_our_first_read)
    result = await secrets._write(WriteRequest("shop", "stripe", {"MINE": b"ours"}), {})
    assert result.set == ("MINE",)
    assert values(api) == {"A": "1", "OTHER": "theirs", "MINE": "ours"}
    assert [m for m, p in api.requests if p == STRIPE].count("PUT") == 2, "the stale PUT was refused, then re-planned"


async def test_a_refusal_of_the_write_is_passed_on_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    api, secrets = fake(monkeypatch)
    api.put(SECRETS, {"metadata": {"name": "stripe", "namespace": "shop"}, "data": {"A": "MQ=="}})
    api.fail("PUT", STRIPE, 403, 'key A of secret "stripe" is used by deployment/web (env API_KEY)')
    with pytest.raises(ApiException) as refused:
        await secrets._write(WriteRequest("shop", "stripe", remove=frozenset({"A"})), {})
    response = edge._passed_on(refused.value)
    assert response.status == 403
    assert b"deployment/web (env API_KEY)" in (response.body or b"")  # type: ignore[operator]
    assert values(api) == {"A": "1"}


async def test_a_user_the_review_does_not_allow_is_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    _, secrets = fake(monkeypatch)
    asked: list[Any] = []

    async def review(api: Any, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        asked.append(body)
        return {**body, "status": {"allowed": False, "reason": "no RBAC policy matched"}}

    monkeypatch.setattr(edge, "json_request", review)
    with pytest.raises(ApiError) as refused:
        await secrets.authorize(Identity("mallory", groups=("devs",)), "create", "secretwrites", "shop")
    assert refused.value.code == 403
    assert 'User "mallory" cannot create resource "secretwrites"' in refused.value.message
    assert refused.value.message.endswith("no RBAC policy matched")
    assert asked[0]["spec"]["user"] == "mallory"
    assert asked[0]["spec"]["resourceAttributes"]["group"] == "secrets.smll.io"
