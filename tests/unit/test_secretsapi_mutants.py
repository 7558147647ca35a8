"""The write-only API's edge where mutation testing found it untested (docs/mutation.md): each route asks the access
review for its own verb, on the Secret it names, and a refusal leaves the Secret as it was."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

import webhook.secretsapi as edge
from rules import secretsapi as api
from rules.workloads import resource_path
from tests.unit.test_secretsapi_tenancy import fake, secret

ATTRIBUTES = {"group": api.GROUP, "version": api.VERSION, "resource": api.VIEWS, "namespace": "shop"}


def on_secret(method: str, name: str) -> web.Request:
    path = f"{edge.BASE}/namespaces/shop/writeonlysecrets/{name}"
    return make_mocked_request(method, path, match_info={"namespace": "shop", "name": name})


async def call(secrets: edge.SecretsApi, route: str, name: str) -> web.StreamResponse:
    if route == "delete":
        return await secrets.delete(on_secret("DELETE", name))
    if route == "get":
        return await secrets.get_view(on_secret("GET", name))
    listing = make_mocked_request(
        "GET", f"{edge.BASE}/namespaces/shop/writeonlysecrets", match_info={"namespace": "shop"}
    )
    return await secrets.list_views(listing)


@pytest.mark.parametrize(
    ("route", "review"),
    [
        pytest.param("delete", {"verb": "delete", "name": "s01", **ATTRIBUTES}, id="a-delete-is-reviewed-as-delete"),
        pytest.param("get", {"verb": "get", "name": "s01", **ATTRIBUTES}, id="a-get-is-reviewed-as-get"),
        pytest.param("list", {"verb": "list", **ATTRIBUTES}, id="a-list-is-reviewed-as-list-in-the-namespace"),
    ],
)
async def test_each_route_asks_the_access_review_for_its_own_verb(
    monkeypatch: pytest.MonkeyPatch, route: str, review: dict[str, Any]
) -> None:
    _, secrets, reviews, _ = fake(monkeypatch)

    answer = await call(secrets, route, "s01")

    assert answer.status == 200
    assert reviews == [review]


@pytest.mark.parametrize("route", ["delete", "get"])
async def test_a_refused_review_stops_the_route_before_it_reads_or_deletes(
    monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    api_, secrets, _, _ = fake(monkeypatch)
    api_.put(resource_path("Secret", "shop"), secret("not-yours"))
    before = len(api_.requests)

    with pytest.raises(api.ApiError) as refused:
        await call(secrets, route, "not-yours")

    assert refused.value.code == 403
    assert refused.value.message.startswith(
        f'writeonlysecrets.secrets.smll.io "not-yours" is forbidden: User "ci" cannot {route} resource '
        '"writeonlysecrets" in API group "secrets.smll.io" in the namespace "shop"'
    )
    assert len(api_.requests) == before
    assert api_.get(resource_path("Secret", "shop", "not-yours")) is not None
